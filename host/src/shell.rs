//! Quoting for the commands a message suggests, so a person can paste them into a shell.

use std::borrow::Cow;

/// `word` as one POSIX shell word: as it is when it holds only characters no shell treats
/// specially, else in single quotes (an embedded `'` written `'\''`), so a certificate named
/// `$ok` is suggested as `'$ok'` and not expanded.
pub fn quote(word: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '@' | '%' | '+' | ',' | '=');
    if !word.is_empty() && word.chars().all(plain) {
        return Cow::Borrowed(word);
    }
    Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn words_a_shell_would_change_are_single_quoted() {
        assert_eq!(quote("billing_api"), "billing_api");
        assert_eq!(quote("/tmp/store"), "/tmp/store");
        assert_eq!(quote("$ok"), "'$ok'");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("*"), "'*'");
    }
}
