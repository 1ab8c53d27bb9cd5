//! Certificate names: the rules of a JavaScript identifier, so a name can be a binding.

use super::StoreError;

/// Words a JavaScript identifier may not be (reserved words and literals).
const RESERVED: &[&str] = &[
    "await",
    "break",
    "case",
    "catch",
    "class",
    "const",
    "continue",
    "debugger",
    "default",
    "delete",
    "do",
    "else",
    "enum",
    "export",
    "extends",
    "false",
    "finally",
    "for",
    "function",
    "if",
    "implements",
    "import",
    "in",
    "instanceof",
    "interface",
    "let",
    "new",
    "null",
    "package",
    "private",
    "protected",
    "public",
    "return",
    "static",
    "super",
    "switch",
    "this",
    "throw",
    "true",
    "try",
    "typeof",
    "var",
    "void",
    "while",
    "with",
    "yield",
];

/// The longest accepted name.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a certificate name; the error ([`StoreError::InvalidName`]) says which rule it breaks.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    match broken_rule(name) {
        Some(reason) => Err(StoreError::InvalidName { name: name.to_string(), reason }),
        None => Ok(()),
    }
}

/// The rule `name` breaks, if any.
fn broken_rule(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("the name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!("the name is {} characters long; at most {MAX_NAME_LEN} are allowed", name.len()));
    }
    let mut chars = name.chars();
    if let Some(first) = chars.next()
        && !(first.is_ascii_alphabetic() || first == '_' || first == '$')
    {
        return Some(format!("the name must start with a letter, '_' or '$', not '{first}'"));
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '$')) {
        return Some(format!("'{bad}' is not allowed; use letters, digits, '_' and '$' (a JavaScript identifier)"));
    }
    if name.len() >= 5 && name[..5].eq_ignore_ascii_case("cert_") {
        return Some("names starting with 'cert_' are reserved: certificate ids look like that".into());
    }
    if RESERVED.contains(&name) {
        return Some(format!("'{name}' is a reserved word in JavaScript"));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]
mod tests {
    use super::validate_name;

    #[test]
    fn accepts_identifiers_and_refuses_the_rest() {
        for ok in ["billing_api", "_x", "$a1", "A", &"a".repeat(64)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("1abc", "must start"),
            ("billing-api", "'-' is not allowed"),
            ("class", "reserved"),
            (&"a".repeat(65), "at most 64"),
            ("cert_0123abcd", "reserved: certificate ids"),
            ("CERT_x", "reserved: certificate ids"),
        ] {
            let err = validate_name(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
