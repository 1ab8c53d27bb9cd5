//! Request paths as routes and upstreams must see them: without dot segments, without empty
//! segments, and without encodings that a later decoder could turn into them.
//!
//! `/public/../admin` must neither match the route `/public` nor reach an upstream as a path
//! that escapes `baseUrl`'s prefix once the upstream resolves it. The host resolves `.` and
//! `..` before routing (RFC 3986 §5.2.4) and refuses what it cannot resolve safely: a `..`
//! above the root, and percent-encoded `/`, `\` or `.` (which upstreams decode differently).
//! Empty segments are dropped (`//api/x` is `/api/x`, as nginx's `merge_slashes` has it):
//! the router already ignores them, so the path it matched is the path the upstream gets,
//! not `/prefix//api/x`. A trailing `/` is kept.

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    /// `..` would leave the root.
    #[error("the path '{0}' climbs above the root with '..'")]
    AboveRoot(String),
    /// An encoded separator or dot that upstreams may decode into one.
    #[error("the path '{0}' contains an encoded '/', '\\' or '.' (%2F, %5C, %2E); send it unencoded")]
    EncodedSeparator(String),
    /// A dot segment with a path parameter (`..;x`), which some servers treat as `..`.
    #[error("the path '{0}' has a '.' or '..' segment with a parameter (;)")]
    DotWithParameter(String),
    /// A backslash, which some servers treat as a separator.
    #[error("the path '{0}' contains a backslash")]
    Backslash(String),
}

/// The path with dot segments resolved, or why it is refused. Paths that need no change
/// come back borrowed.
pub fn normalize(path: &str) -> Result<std::borrow::Cow<'_, str>, PathProblem> {
    // Per request: look for the encodings without lowercasing a copy of the path.
    let encoded_separator = path
        .as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && ((w[1] == b'2' && matches!(w[2] | 0x20, b'f' | b'e')) || (w[1] == b'5' && w[2] | 0x20 == b'c')));
    if encoded_separator {
        return Err(PathProblem::EncodedSeparator(path.to_string()));
    }
    if path.contains('\\') {
        return Err(PathProblem::Backslash(path.to_string()));
    }
    // `..;x` is `..` to servers that strip path parameters (Tomcat, Spring).
    if path.split('/').any(|segment| segment.starts_with(".;") || segment.starts_with("..;")) {
        return Err(PathProblem::DotWithParameter(path.to_string()));
    }
    if !path.contains("//") && !path.split('/').any(|segment| segment == "." || segment == "..") {
        return Ok(std::borrow::Cow::Borrowed(path));
    }
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = path.split('/').skip(1).peekable();
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            "." => {
                if last {
                    segments.push("");
                }
            }
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathProblem::AboveRoot(path.to_string()));
                }
                if last {
                    segments.push("");
                }
            }
            "" if !last => {}
            other => segments.push(other),
        }
    }
    Ok(std::borrow::Cow::Owned(format!("/{}", segments.join("/"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_resolve_and_clean_paths_are_untouched() {
        assert_eq!(normalize("/api/users/7").unwrap(), "/api/users/7");
        assert!(matches!(normalize("/api/users/7").unwrap(), std::borrow::Cow::Borrowed(_)));
        assert_eq!(normalize("/public/../admin").unwrap(), "/admin");
        assert_eq!(normalize("/a/./b/").unwrap(), "/a/b/");
        assert_eq!(normalize("/a/b/..").unwrap(), "/a/");
        assert_eq!(normalize("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(normalize("/").unwrap(), "/");
    }

    #[test]
    fn empty_segments_collapse_and_a_trailing_slash_stays() {
        assert_eq!(normalize("//api/x").unwrap(), "/api/x");
        assert_eq!(normalize("/api//x").unwrap(), "/api/x");
        assert_eq!(normalize("/api///x//").unwrap(), "/api/x/");
        assert_eq!(normalize("//").unwrap(), "/");
        assert_eq!(normalize("/a//../b").unwrap(), "/b");
        assert_eq!(normalize("/api/x/").unwrap(), "/api/x/");
    }

    #[test]
    fn escapes_and_encodings_are_refused() {
        assert!(matches!(normalize("/hdr/../../admin"), Err(PathProblem::AboveRoot(_))));
        assert!(matches!(normalize("/hdr/..%2f..%2fadmin"), Err(PathProblem::EncodedSeparator(_))));
        assert!(matches!(normalize("/hdr/%2E%2E/admin"), Err(PathProblem::EncodedSeparator(_))));
        assert!(matches!(normalize("/hdr/..%5cadmin"), Err(PathProblem::EncodedSeparator(_))));
        assert!(matches!(normalize("/hdr\\..\\admin"), Err(PathProblem::Backslash(_))));
        assert!(matches!(normalize("/public/..;/admin"), Err(PathProblem::DotWithParameter(_))));
        assert_eq!(normalize("/a;b/c").unwrap(), "/a;b/c");
    }
}
