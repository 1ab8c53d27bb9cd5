//! `rewritePattern` expansion. Where a placeholder stands in the URL decides how its value is
//! escaped, so that a value the caller chose stays data and never becomes URL structure: a
//! header holding `a?admin=1` must not start a query, `a#frag` must not cut it off, and
//! `../../admin` must not climb out of the path the pattern gives.
//!
//! Upstreams decode more than RFC 3986 says they should before they resolve dot segments
//! (nginx reads `/t/..%2F..%2Fadmin` and `/t/%2E%2E/admin` as `/admin`), so escaping alone
//! cannot keep a caller's `..` from climbing: a path segment made from a caller's value that
//! such an upstream could read as `.` or `..` is refused instead.

use std::ops::Range;

/// A placeholder's value, by what it holds: that decides how it is escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// The operator's own text (`${env.NAME}`): placed as written, like the pattern itself.
    Operator(String),
    /// Text from the caller that is not URL-encoded: a header, the method.
    Text(String),
    /// A route parameter: one path segment as the caller sent it, already percent-encoded.
    Segment(String),
    /// The request path as the host normalised it (no dot segments), percent-encoded.
    Path(String),
    /// The request query without `?`, percent-encoded.
    Query(String),
    /// `${search}`: the request query, which starts the URL's query (or joins it with `&`).
    Search(String),
}

impl Value {
    fn is_callers(&self) -> bool {
        !matches!(self, Value::Operator(_))
    }
}

/// Why a URL could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The pattern cannot be expanded: the route's options must change.
    Pattern(String),
    /// A value from the caller cannot be placed safely: this request is refused.
    Value(String),
}

/// The part of the URL a placeholder stands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Before the path: the scheme or the host.
    Authority,
    Path,
    /// After `?` (or `#`, which is never sent).
    Query,
}

/// Expands the `${...}` placeholders of `pattern`, asking `value_of` for each placeholder's
/// value (an error is the pattern's fault). A trailing `?` left by an empty query is dropped.
pub fn expand(pattern: &str, mut value_of: impl FnMut(&str) -> Result<Value, String>) -> Result<String, Refusal> {
    let mut url = String::with_capacity(pattern.len() + 32);
    // Where the caller's values landed, to refuse the dot segments they make.
    let mut callers: Vec<(Range<usize>, &str)> = Vec::new();
    let mut rest = pattern;
    while let Some(start) = rest.find("${") {
        url.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| Refusal::Pattern(format!("unclosed placeholder in '{pattern}'")))?;
        let key = after[..end].trim();
        let value = value_of(key).map_err(Refusal::Pattern)?;
        let begin = url.len();
        let callers_value = value.is_callers();
        let part = part_at(&url);
        place(&mut url, key, value, part)?;
        if callers_value {
            callers.push((begin..url.len(), key));
        }
        rest = &after[end + 1..];
    }
    url.push_str(rest);
    if url.ends_with('?') {
        url.pop();
    }
    refuse_dot_segments(&url, &callers)?;
    Ok(url)
}

/// The part of the URL that text appended to `url` lands in; split as the host splits the
/// URL it forwards to.
fn part_at(url: &str) -> Part {
    let Some((_, after_scheme)) = url.split_once("://") else {
        return Part::Authority;
    };
    match after_scheme.find(['/', '?', '#']) {
        None => Part::Authority,
        Some(at) if after_scheme[at..].contains(['?', '#']) => Part::Query,
        Some(_) => Part::Path,
    }
}

/// Appends `value`, escaped for `part`.
fn place(url: &mut String, key: &str, value: Value, part: Part) -> Result<(), Refusal> {
    match (value, part) {
        (Value::Operator(text), _) => url.push_str(&text),
        // A caller may pick one label of the host (`${params.tenant}.api.internal`), no more:
        // a dot, `@` or `:` would let it pick another host or port.
        (Value::Text(text) | Value::Segment(text), Part::Authority) => {
            let is_label = !text.is_empty() && text.len() <= 63 && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !is_label {
                return Err(Refusal::Value(format!(
                    "the value of ${{{key}}} is not one DNS label (letters, digits and '-'), so it cannot be part of the upstream's host name"
                )));
            }
            url.push_str(&text);
        }
        // `https://up${pathname}`: the path starts the URL's path.
        (Value::Path(text), Part::Authority) => {
            if !text.starts_with('/') {
                url.push('/');
            }
            escape(url, &text, Escapes::Keep, is_path_char);
        }
        (Value::Query(_), Part::Authority) => {
            return Err(Refusal::Pattern(format!("${{{key}}} stands in the upstream's host; put it after the host's '/' or '?'")));
        }
        (Value::Text(text), Part::Path | Part::Query) => escape(url, &text, Escapes::Encode, is_unreserved),
        (Value::Segment(text) | Value::Query(text), Part::Path) => escape(url, &text, Escapes::Keep, is_unreserved),
        (Value::Segment(text) | Value::Path(text), Part::Query) => escape(url, &text, Escapes::Keep, is_unreserved),
        (Value::Path(text), Part::Path) => escape(url, &text, Escapes::Keep, is_path_char),
        (Value::Query(text), Part::Query) => escape(url, &text, Escapes::Keep, is_query_char),
        (Value::Search(text), Part::Authority | Part::Path) if !text.is_empty() => {
            url.push('?');
            escape(url, &text, Escapes::Keep, is_query_char);
        }
        (Value::Search(text), Part::Query) if !text.is_empty() => {
            if !url.ends_with(['?', '&']) {
                url.push('&');
            }
            escape(url, &text, Escapes::Keep, is_query_char);
        }
        (Value::Search(_), _) => {}
    }
    Ok(())
}

/// What to do with a `%XX` already in a value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Escapes {
    /// The value was percent-encoded by the caller: its escapes stay as they are.
    Keep,
    /// The value is plain text: its `%` is data and is escaped too.
    Encode,
}

/// Appends `text`, percent-encoding every byte `allowed` refuses.
fn escape(url: &mut String, text: &str, escapes: Escapes, allowed: fn(u8) -> bool) {
    let bytes = text.as_bytes();
    for (at, &byte) in bytes.iter().enumerate() {
        let is_escape = byte == b'%'
            && escapes == Escapes::Keep
            && bytes.get(at + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(at + 2).is_some_and(u8::is_ascii_hexdigit);
        if allowed(byte) || is_escape {
            url.push(char::from(byte));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            url.push('%');
            url.push(char::from(HEX[usize::from(byte >> 4)]));
            url.push(char::from(HEX[usize::from(byte & 0x0F)]));
        }
    }
}

/// RFC 3986 `unreserved`: what one segment or query value may hold unescaped.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `pchar` and `/`: what a whole path may hold.
fn is_path_char(byte: u8) -> bool {
    is_unreserved(byte) || matches!(byte, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@' | b'/')
}

/// RFC 3986 `query`: what a whole query string may hold.
fn is_query_char(byte: u8) -> bool {
    is_path_char(byte) || byte == b'?'
}

/// Refuses a path segment holding a caller's value that an upstream could read as `.` or `..`.
fn refuse_dot_segments(url: &str, callers: &[(Range<usize>, &str)]) -> Result<(), Refusal> {
    let Some(path) = path_range(url) else {
        return Ok(());
    };
    let mut start = path.start;
    for segment in url[path].split('/') {
        let range = start..start + segment.len();
        start = range.end + 1;
        if !could_be_dot_segment(segment) {
            continue;
        }
        if let Some((_, key)) = callers.iter().find(|(value, _)| value.start < range.end && range.start < value.end) {
            return Err(Refusal::Value(format!(
                "the value of ${{{key}}} makes the upstream path segment '{segment}', which upstreams read as '.' or '..' and resolve out of the path the route sends to"
            )));
        }
    }
    Ok(())
}

/// The byte range of `url`'s path, after the host and before `?` or `#`.
fn path_range(url: &str) -> Option<Range<usize>> {
    let after_scheme = url.find("://")? + 3;
    let start = after_scheme + url[after_scheme..].find(['/', '?', '#'])?;
    if !url[start..].starts_with('/') {
        return None;
    }
    let end = url[start..].find(['?', '#']).map_or(url.len(), |at| start + at);
    Some(start..end)
}

/// Whether `segment` holds a `.` or `..` segment for an upstream that decodes `%2E`, `%2F`
/// and `%5C` before it resolves dot segments (nginx), or that drops `;` parameters first
/// (Tomcat).
fn could_be_dot_segment(segment: &str) -> bool {
    let mut decoded = String::with_capacity(segment.len());
    let mut rest = segment;
    while let Some(at) = rest.find('%') {
        decoded.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        match escape.to_ascii_uppercase().as_str() {
            "%2E" => decoded.push('.'),
            "%2F" => decoded.push('/'),
            "%5C" => decoded.push('\\'),
            "%3B" => decoded.push(';'),
            other => decoded.push_str(other),
        }
        rest = &rest[at + escape.len()..];
    }
    decoded.push_str(rest);
    decoded.split(['/', '\\']).any(|piece| matches!(piece.split(';').next(), Some("." | "..")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expands `pattern` for a request to `/users/42?q=1` on the route `/users/:id`, with
    /// header `x-tenant` set to `tenant`.
    fn expand_for(pattern: &str, tenant: &str) -> Result<String, Refusal> {
        expand(pattern, |key| match key {
            "params.id" => Ok(Value::Segment("42".into())),
            "headers.x-tenant" => Ok(Value::Text(tenant.into())),
            "method" => Ok(Value::Text("GET".into())),
            "pathname" => Ok(Value::Path("/users/42".into())),
            "query" => Ok(Value::Query("q=1".into())),
            "search" => Ok(Value::Search("q=1".into())),
            "env.BASE" => Ok(Value::Operator("https://up/base".into())),
            other => Err(format!("unknown placeholder '${{{other}}}'")),
        })
    }

    const ISSUE_PATTERN: &str = "https://up/u/${params.id}/t/${headers.x-tenant}${search}";

    #[test]
    fn a_header_in_the_path_is_one_segment() {
        assert_eq!(expand_for(ISSUE_PATTERN, "acme").unwrap(), "https://up/u/42/t/acme?q=1");
        assert_eq!(expand_for(ISSUE_PATTERN, "a?admin=1").unwrap(), "https://up/u/42/t/a%3Fadmin%3D1?q=1");
        assert_eq!(expand_for(ISSUE_PATTERN, "a#frag").unwrap(), "https://up/u/42/t/a%23frag?q=1");
        assert_eq!(expand_for(ISSUE_PATTERN, "a/b").unwrap(), "https://up/u/42/t/a%2Fb?q=1");
        assert_eq!(expand_for(ISSUE_PATTERN, "%2E%2E").unwrap(), "https://up/u/42/t/%252E%252E?q=1", "a header's % is data");
        assert_eq!(expand_for(ISSUE_PATTERN, "x..y").unwrap(), "https://up/u/42/t/x..y?q=1");
    }

    #[test]
    fn a_header_that_would_make_a_dot_segment_is_refused() {
        for hostile in ["..", ".", "../../admin", "a/../../admin", "..\\admin", "..;x"] {
            let refusal = expand_for(ISSUE_PATTERN, hostile).unwrap_err();
            assert!(matches!(&refusal, Refusal::Value(words) if words.contains("${headers.x-tenant}")), "{hostile}: {refusal:?}");
        }
        // Made of two pieces: the caller's `.` and the pattern's.
        assert!(matches!(expand_for("https://up/t/${headers.x-tenant}./x", "."), Err(Refusal::Value(_))));
        // The pattern's own `..` is the operator's choice.
        assert_eq!(expand_for("https://up/a/../t/${headers.x-tenant}", "b").unwrap(), "https://up/a/../t/b");
    }

    #[test]
    fn a_header_in_the_query_is_one_value() {
        let pattern = "https://up/lookup?id=${params.id}&tenant=${headers.x-tenant}${search}";
        assert_eq!(expand_for(pattern, "a&admin=1#x").unwrap(), "https://up/lookup?id=42&tenant=a%26admin%3D1%23x&q=1");
        assert_eq!(expand_for(pattern, "..").unwrap(), "https://up/lookup?id=42&tenant=..&q=1", "dots are harmless in a query");
        assert_eq!(expand_for("https://up/r?next=${pathname}", "").unwrap(), "https://up/r?next=%2Fusers%2F42");
        assert_eq!(expand_for("https://up/m/${method}?${query}", "").unwrap(), "https://up/m/GET?q=1");
    }

    #[test]
    fn encoded_values_keep_their_escapes() {
        let value = |text: &str| {
            let text = text.to_string();
            move |_: &str| Ok(Value::Segment(text.clone()))
        };
        assert_eq!(expand("https://up/u/${params.id}", value("a%20b")).unwrap(), "https://up/u/a%20b");
        assert_eq!(expand("https://up/u/${params.id}", value("a;b=c")).unwrap(), "https://up/u/a%3Bb%3Dc");
        assert_eq!(expand("https://up/u?id=${params.id}", value("1&admin=1")).unwrap(), "https://up/u?id=1%26admin%3D1");
        assert_eq!(expand("https://up/u/${params.id}", value("100%")).unwrap(), "https://up/u/100%25");
        let query = |text: &str| {
            let text = text.to_string();
            move |_: &str| Ok(Value::Query(text.clone()))
        };
        assert_eq!(expand("https://up/q?${query}", query("a=1&b=%20")).unwrap(), "https://up/q?a=1&b=%20");
        assert!(matches!(expand("https://up/q/${query}", query("%2E%2E")), Err(Refusal::Value(_))));
    }

    #[test]
    fn the_path_and_the_query_keep_their_structure() {
        assert_eq!(expand_for("https://up/v2${pathname}${search}", "").unwrap(), "https://up/v2/users/42?q=1");
        assert_eq!(expand_for("${env.BASE}${pathname}?${query}", "").unwrap(), "https://up/base/users/42?q=1");
        let empty = |key: &str| Ok(if key == "search" { Value::Search(String::new()) } else { Value::Query(String::new()) });
        assert_eq!(expand("https://up/x?${query}", empty).unwrap(), "https://up/x", "a trailing '?' is dropped");
        assert_eq!(expand("https://up/x${search}", empty).unwrap(), "https://up/x");
    }

    #[test]
    fn a_caller_picks_at_most_one_host_label() {
        assert_eq!(expand_for("https://${headers.x-tenant}.api.internal/x", "acme-1").unwrap(), "https://acme-1.api.internal/x");
        for hostile in ["evil.com", "evil.com@", "x:1", "", "a/b"] {
            assert!(matches!(expand_for("https://${headers.x-tenant}.api.internal/x", hostile), Err(Refusal::Value(_))), "{hostile}");
        }
        assert_eq!(expand_for("https://up${pathname}${search}", "").unwrap(), "https://up/users/42?q=1");
        assert!(matches!(expand_for("https://${query}/x", ""), Err(Refusal::Pattern(_))));
    }

    #[test]
    fn pattern_mistakes_are_the_patterns() {
        assert!(matches!(expand_for("https://up/${nope}", ""), Err(Refusal::Pattern(words)) if words.contains("unknown placeholder")));
        assert!(matches!(expand_for("https://up/${params.id", ""), Err(Refusal::Pattern(words)) if words.contains("unclosed")));
    }
}
