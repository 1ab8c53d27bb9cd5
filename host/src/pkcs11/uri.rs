//! PKCS#11 URIs (RFC 7512): which token, and which key in it.
//!
//! `pkcs11:token=edge;object=client-key?pin-source=file:/run/secrets/pin` names a token by
//! its label (or serial), a private key by its label (`object`) or `id`, and optionally the
//! module to load and a file that holds the PIN. A PIN written into the URI (`pin-value`) is
//! refused: the URI is stored and shown, so the PIN would be too.

use std::fmt;
use std::path::PathBuf;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// A parsed `pkcs11:` URI that names one private key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyUri {
    /// The token's label (`token=`).
    pub token: Option<String>,
    /// The token's serial number (`serial=`).
    pub serial: Option<String>,
    /// The key's label (`object=`).
    pub object: Option<String>,
    /// The key's CKA_ID (`id=`, percent-encoded bytes).
    pub id: Option<Vec<u8>>,
    /// The module to load (`module-path=`), instead of the configured one.
    pub module_path: Option<PathBuf>,
    /// A file holding the PIN (`pin-source=file:…`), instead of the configured variable.
    pub pin_file: Option<PathBuf>,
}

/// Why a `pkcs11:` URI cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key URI '{uri}': {reason}")]
pub struct UriError {
    /// The URI as given, with any `pin-value` removed.
    pub uri: String,
    /// What is wrong and what to do.
    pub reason: String,
}

/// Bytes that stay readable in a URI value; everything else is percent-encoded.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');

impl KeyUri {
    /// Whether `text` looks like a PKCS#11 URI rather than a file name.
    pub fn is_uri(text: &str) -> bool {
        text.get(..7).is_some_and(|scheme| scheme.eq_ignore_ascii_case("pkcs11:"))
    }

    /// Parses `text`, which must name a token (`token` or `serial`) and a key (`object` or
    /// `id`), and must not carry the PIN.
    pub fn parse(text: &str) -> Result<Self, UriError> {
        let fail = |reason: String| UriError { uri: without_pin_value(text), reason };
        if !Self::is_uri(text) {
            return Err(fail("a token key is named by a URI starting with 'pkcs11:'".into()));
        }
        let rest = &text[7..];
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = KeyUri { token: None, serial: None, object: None, id: None, module_path: None, pin_file: None };
        for attribute in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attribute.split_once('=').ok_or_else(|| fail(format!("'{attribute}' has no '=value'")))?;
            let bytes = decode(value).ok_or_else(|| fail(format!("the value of '{name}' is not valid percent-encoding")))?;
            let text_value = || String::from_utf8(bytes.clone()).map_err(|_| fail(format!("the value of '{name}' is not UTF-8")));
            match name {
                "token" => uri.token = Some(text_value()?),
                "serial" => uri.serial = Some(text_value()?),
                "object" => uri.object = Some(text_value()?),
                "id" => uri.id = Some(bytes),
                "type" if bytes == b"private" => {}
                "type" => return Err(fail("only private keys can sign: use 'type=private' or leave 'type' out".into())),
                // These narrow the search further than edgemtls needs; a token label or
                // serial already picks one token.
                "manufacturer"
                | "model"
                | "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer"
                | "slot-id" => {}
                other => return Err(fail(format!("unknown attribute '{other}'"))),
            }
        }
        for attribute in query.split('&').filter(|a| !a.is_empty()) {
            let (name, value) = attribute.split_once('=').ok_or_else(|| fail(format!("'{attribute}' has no '=value'")))?;
            if name == "pin-value" {
                return Err(fail(
                    "the PIN must not be written in the URI (it would be stored and shown); put it in an environment variable \
                     and name that with --pin-env, or in a file named by 'pin-source=file:PATH'"
                        .into(),
                ));
            }
            let value = decode(value)
                .and_then(|v| String::from_utf8(v).ok())
                .ok_or_else(|| fail(format!("the value of '{name}' is not valid percent-encoded UTF-8")))?;
            match name {
                "module-path" => uri.module_path = Some(PathBuf::from(value)),
                "module-name" => {}
                "pin-source" => {
                    let path = value
                        .strip_prefix("file:")
                        .ok_or_else(|| fail("'pin-source' must be 'file:' followed by the path of a file holding the PIN".into()))?;
                    uri.pin_file = Some(PathBuf::from(path.strip_prefix("//").unwrap_or(path)));
                }
                other => return Err(fail(format!("unknown query attribute '{other}'"))),
            }
        }
        if uri.token.is_none() && uri.serial.is_none() {
            return Err(fail("name the token with 'token=LABEL' (or 'serial=')".into()));
        }
        if uri.object.is_none() && uri.id.is_none() {
            return Err(fail("name the key with 'object=LABEL' (or 'id=')".into()));
        }
        Ok(uri)
    }

    /// The token, for messages: `token 'edge'` or `token with serial '…'`.
    pub fn token_shown(&self) -> String {
        match (&self.token, &self.serial) {
            (Some(label), _) => format!("token '{label}'"),
            (None, Some(serial)) => format!("token with serial '{serial}'"),
            (None, None) => "token".into(),
        }
    }

    /// The key, for messages: `key 'client' in token 'edge'`.
    pub fn key_shown(&self) -> String {
        let key = match (&self.object, &self.id) {
            (Some(label), _) => format!("key '{label}'"),
            (None, Some(id)) => format!("key with id {}", hex(id)),
            (None, None) => "key".into(),
        };
        format!("{key} in {}", self.token_shown())
    }
}

/// The canonical form: what the store keeps and `cert show` prints.
impl fmt::Display for KeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path = Vec::new();
        let encode = |v: &str| utf8_percent_encode(v, VALUE).to_string();
        if let Some(token) = &self.token {
            path.push(format!("token={}", encode(token)));
        }
        if let Some(serial) = &self.serial {
            path.push(format!("serial={}", encode(serial)));
        }
        if let Some(object) = &self.object {
            path.push(format!("object={}", encode(object)));
        }
        if let Some(id) = &self.id {
            path.push(format!("id={}", id.iter().map(|b| format!("%{b:02x}")).collect::<String>()));
        }
        path.push("type=private".into());
        write!(f, "pkcs11:{}", path.join(";"))?;
        let mut query = Vec::new();
        if let Some(module) = &self.module_path {
            query.push(format!("module-path={}", encode(&module.to_string_lossy())));
        }
        if let Some(pin) = &self.pin_file {
            query.push(format!("pin-source=file:{}", encode(&pin.to_string_lossy())));
        }
        if !query.is_empty() {
            write!(f, "?{}", query.join("&"))?;
        }
        Ok(())
    }
}

fn decode(value: &str) -> Option<Vec<u8>> {
    // A '%' not followed by two hex digits is an error, not a literal.
    let bytes = value.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%' && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit) && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit)) {
            return None;
        }
    }
    Some(percent_decode_str(value).collect())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `text` with the value of any `pin-value` replaced, for error messages.
fn without_pin_value(text: &str) -> String {
    let Some((head, query)) = text.split_once('?') else { return text.to_string() };
    let query: Vec<&str> = query.split('&').map(|a| if a.starts_with("pin-value=") { "pin-value=(hidden)" } else { a }).collect();
    format!("{head}?{}", query.join("&"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]
mod tests {
    use super::*;

    #[test]
    fn parses_token_object_id_and_query() {
        let uri = KeyUri::parse(
            "pkcs11:token=my%20token;object=client;id=%01%ff;type=private?module-path=/usr/lib/x.so&pin-source=file:/run/pin",
        )
        .unwrap();
        assert_eq!(uri.token.as_deref(), Some("my token"));
        assert_eq!(uri.object.as_deref(), Some("client"));
        assert_eq!(uri.id.as_deref(), Some(&[1u8, 255][..]));
        assert_eq!(uri.module_path, Some(PathBuf::from("/usr/lib/x.so")));
        assert_eq!(uri.pin_file, Some(PathBuf::from("/run/pin")));
        // The canonical form parses back to the same URI.
        assert_eq!(KeyUri::parse(&uri.to_string()).unwrap(), uri);
        assert_eq!(uri.key_shown(), "key 'client' in token 'my token'");
    }

    #[test]
    fn refuses_pin_value_without_echoing_it() {
        let error = KeyUri::parse("pkcs11:token=t;object=k?pin-value=1234").unwrap_err();
        assert!(error.reason.contains("must not be written in the URI"), "{error}");
        assert!(!error.to_string().contains("1234"), "{error}");
    }

    #[test]
    fn says_what_is_missing() {
        assert!(KeyUri::parse("pkcs11:object=k").unwrap_err().reason.contains("token="));
        assert!(KeyUri::parse("pkcs11:token=t").unwrap_err().reason.contains("object="));
        assert!(KeyUri::parse("pkcs11:token=t;object=k;type=cert").unwrap_err().reason.contains("type=private"));
        assert!(KeyUri::parse("pkcs11:token=t;object=k;colour=red").unwrap_err().reason.contains("'colour'"));
        assert!(KeyUri::parse("pkcs11:token=%zz;object=k").is_err());
        assert!(!KeyUri::is_uri("key.pem"));
    }
}
