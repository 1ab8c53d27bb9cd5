//! I/O errors in words for the person who runs edgemtls.
//!
//! An `std::io::Error` from the operating system displays as "No such file or directory (os
//! error 2)": the C library's phrase and a number that means nothing to most readers. Every
//! message that embeds an I/O error goes through [`io_error`], which words it by its
//! [`std::io::ErrorKind`]. The caller's message names the file or address; these words say
//! what is wrong with it.

use std::borrow::Cow;
use std::io::ErrorKind;

/// What went wrong, in plain words, for an I/O error about a file, a directory or an address
/// the surrounding message names.
///
/// An error edgemtls made itself with words of its own ("not a regular file") keeps them.
///
/// # Examples
///
/// ```
/// let error = std::io::Error::from_raw_os_error(2); // ENOENT
/// assert_eq!(edgemtls_host::plain::io_error(&error), "it does not exist");
/// ```
pub fn io_error(error: &std::io::Error) -> Cow<'static, str> {
    // An error with a payload and no OS code was made with words (ours, or a library's
    // wrapped error, such as a TLS alert on a socket): those words are the message.
    if error.raw_os_error().is_none()
        && let Some(inner) = error.get_ref()
    {
        return Cow::Owned(inner.to_string());
    }
    Cow::Borrowed(match error.kind() {
        ErrorKind::NotFound => "it does not exist",
        ErrorKind::PermissionDenied => "permission denied: this user may not open it (check its owner and mode, or run as a user who may)",
        ErrorKind::AlreadyExists => "it already exists",
        ErrorKind::IsADirectory => "it is a directory, not a file",
        ErrorKind::NotADirectory => "a part of the path is a file, not a directory",
        ErrorKind::DirectoryNotEmpty => "the directory is not empty",
        ErrorKind::ReadOnlyFilesystem => "the file system is read-only",
        ErrorKind::StorageFull => "the disk is full",
        ErrorKind::QuotaExceeded => "this user's disk quota is used up",
        ErrorKind::FileTooLarge => "the file is too large for the file system",
        ErrorKind::InvalidFilename => "the name is too long or not allowed by the file system",
        ErrorKind::TooManyLinks => "the path has too many links",
        ErrorKind::StaleNetworkFileHandle => "the network file system lost the file; try again",
        ErrorKind::ResourceBusy | ErrorKind::ExecutableFileBusy => "it is busy (another program holds it)",
        ErrorKind::CrossesDevices => "it is on another file system",
        ErrorKind::InvalidData => "its contents are not what was expected (for text: not valid UTF-8)",
        ErrorKind::UnexpectedEof => "it ended before it was complete",
        ErrorKind::AddrInUse => "another program already listens on this address",
        ErrorKind::AddrNotAvailable => "this address is not one of this machine's addresses",
        ErrorKind::ConnectionRefused => "the connection was refused: nothing listens on that port",
        ErrorKind::ConnectionReset => "the other side closed the connection abruptly",
        ErrorKind::ConnectionAborted => "the connection was aborted",
        ErrorKind::NotConnected => "the connection is not open",
        ErrorKind::BrokenPipe => "the other side closed the connection",
        ErrorKind::HostUnreachable => "the host cannot be reached from this machine",
        ErrorKind::NetworkUnreachable => "the network cannot be reached from this machine",
        ErrorKind::NetworkDown => "the network is down",
        ErrorKind::TimedOut => "it timed out",
        ErrorKind::WouldBlock | ErrorKind::Interrupted => "it was interrupted; try again",
        ErrorKind::OutOfMemory => "the machine is out of memory",
        ErrorKind::Unsupported => "this system does not support it",
        ErrorKind::InvalidInput => "the request to the operating system was not valid",
        // The kind's own short description ("entity not found", "permission denied", ...),
        // never the OS message with its error number.
        other => return Cow::Owned(other.to_string()),
    })
}

/// Why binding `addr` failed and what to do, for the listener that the command-line option
/// `option` (e.g. `--listen`) or the config key `key` sets.
pub fn cannot_listen(addr: std::net::SocketAddr, option: &str, key: &str, error: &std::io::Error) -> String {
    let fix = match error.kind() {
        ErrorKind::AddrInUse => format!(
            "another program already listens on port {}; stop it, or choose another port with {option} (or `{key}` in the config)",
            addr.port()
        ),
        ErrorKind::PermissionDenied => format!(
            "this user may not listen on port {} (ports below 1024 need root or CAP_NET_BIND_SERVICE); choose a port above 1023 with {option} (or `{key}` in the config)",
            addr.port()
        ),
        ErrorKind::AddrNotAvailable => format!(
            "{} is not one of this machine's addresses; choose another with {option} (or `{key}` in the config), e.g. 127.0.0.1:{}",
            addr.ip(),
            addr.port()
        ),
        _ => format!("{}; choose another address with {option} (or `{key}` in the config)", io_error(error)),
    };
    format!("cannot listen on {addr}: {fix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_os_errors_by_kind_without_their_number() {
        for (code, words) in [
            (2, "it does not exist"),
            (13, "permission denied"),
            (98, "another program already listens"),
            (111, "nothing listens on that port"),
        ] {
            let text = io_error(&std::io::Error::from_raw_os_error(code));
            assert!(text.contains(words), "os error {code}: {text}");
            assert!(!text.contains("os error"), "os error {code}: {text}");
        }
    }

    #[test]
    fn a_taken_port_names_the_option_that_picks_another() {
        let addr: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let text = cannot_listen(addr, "--listen", "listen", &std::io::Error::from_raw_os_error(98));
        assert_eq!(
            text,
            "cannot listen on 127.0.0.1:8080: another program already listens on port 8080; stop it, or choose another port with --listen (or `listen` in the config)"
        );
    }

    #[test]
    fn keeps_words_an_error_was_made_with() {
        let error = std::io::Error::new(ErrorKind::InvalidInput, "not a regular file");
        assert_eq!(io_error(&error), "not a regular file");
    }

    #[test]
    fn a_kind_without_words_of_its_own_uses_the_kind_description() {
        let text = io_error(&std::io::Error::from(ErrorKind::Other));
        assert!(!text.is_empty() && !text.contains("os error"), "{text}");
    }
}
