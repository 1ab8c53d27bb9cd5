//! Files on this machine: reading files a user names (regular files only, never more than a
//! stated size; `~` expanded), and the private directories edgemtls keeps its own files in.
//!
//! A FIFO, a device such as `/dev/zero` or a file that grows while it is read must give a
//! clear error, not a hang or gigabytes of memory.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Expands a leading `~` or `~/` to the user's home directory.
pub fn expand_tilde(path: &Path) -> PathBuf {
    let Some(text) = path.to_str() else {
        return path.to_path_buf();
    };
    let rest = if text == "~" {
        ""
    } else if let Some(rest) = text.strip_prefix("~/") {
        rest
    } else {
        return path.to_path_buf();
    };
    match std::env::home_dir() {
        Some(home) => home.join(rest),
        None => path.to_path_buf(),
    }
}

/// Creates `dir` and its missing parents, readable by this user only (0700); an existing
/// directory is left as it is.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// This user's cache directory: `$XDG_CACHE_HOME`, else `$HOME/.cache`; `None` without either.
pub fn cache_home() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|d| !d.is_empty()).map(|home| PathBuf::from(home).join(".cache")))
}

/// Reads `path` if it is a regular file of at most `max` bytes. The error says which rule
/// the file broke, in words fit for a user (the caller adds the file name).
pub fn read_regular_file(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let metadata = std::fs::metadata(path)?;
    if !metadata.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let too_large = || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("larger than the limit of {}", describe_size(max)));
    if metadata.len() > max {
        return Err(too_large());
    }
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    // `take` guards against a file that grows between the size check and the read.
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_large());
    }
    Ok(bytes)
}

fn describe_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let error = read_regular_file(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert_eq!(error.to_string(), "not a regular file");
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_regular_file(dir.path(), 1 << 20).unwrap_err().to_string(), "not a regular file");
    }

    #[test]
    fn refuses_a_file_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![0u8; 2049]).unwrap();
        assert_eq!(read_regular_file(&path, 2048).unwrap_err().to_string(), "larger than the limit of 2 KiB");
        assert_eq!(read_regular_file(&path, 4096).unwrap().len(), 2049);
    }
}
