//! A logged-in session on the token a URI names: opening it (finding the token, logging in),
//! the calls that a module restart must not run under, and finding the key.

use std::sync::{Arc, RwLockReadGuard};

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};

use super::error::failed;
use super::module::{Module, module};
use super::{KeyUri, TokenError, TokenSettings};

/// A logged-in session on the token a URI names.
pub(in crate::pkcs11) struct TokenSession {
    /// Always `Some` until dropped.
    session: Option<Session>,
    module: Arc<Module>,
    /// The module's generation the session belongs to.
    generation: u64,
}

impl Drop for TokenSession {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let generation = self.module.generation.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if *generation == self.generation {
                let _ = session.close();
            }
        }
    }
}

impl TokenSession {
    /// Finds the token, opens a session (read-write if `write`) and logs the user in. A token
    /// that is not there is looked for again after a restart of its module, when one is due.
    pub(in crate::pkcs11) fn open(uri: &KeyUri, settings: &TokenSettings, write: bool) -> Result<Self, TokenError> {
        let module_path = settings.module_for(uri);
        let module = module(module_path)?;
        // A token the module does not list, or a module that fails (a restart while the token
        // was away may have left it stopped), may do better after a restart.
        let outcome = match Self::open_on(&module, uri, settings, write) {
            Ok(Err(_)) | Err(TokenError::Failed { .. }) if module.restart_if_due() => Self::open_on(&module, uri, settings, write),
            outcome => outcome,
        };
        match outcome? {
            Ok(session) => Ok(session),
            Err(present) => {
                let present = if present.is_empty() { "none".to_string() } else { present.join(", ") };
                Err(TokenError::NoToken { token: uri.token_shown(), module: module_path.to_path_buf(), present })
            }
        }
    }

    /// [`TokenSession::open`] on the module as it is; `Ok(Err(labels))` when the token is not
    /// among the tokens it lists.
    fn open_on(module: &Arc<Module>, uri: &KeyUri, settings: &TokenSettings, write: bool) -> Result<Result<Self, Vec<String>>, TokenError> {
        let generation = module.generation.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let pkcs11 = &module.pkcs11;
        let slots = pkcs11.get_slots_with_token().map_err(failed(uri, "listing its slots"))?;
        let mut present = Vec::new();
        let mut found = None;
        for slot in slots {
            let Ok(info) = pkcs11.get_token_info(slot) else { continue };
            let label = info.label().trim_end().to_string();
            let serial = info.serial_number().trim_end().to_string();
            let matches = uri.token.as_ref().is_none_or(|t| *t == label) && uri.serial.as_ref().is_none_or(|s| *s == serial);
            if matches && found.is_none() {
                found = Some(slot);
            }
            if !label.is_empty() {
                present.push(format!("'{label}'"));
            }
        }
        let Some(slot) = found else { return Ok(Err(present)) };
        // Sessions are closed by `TokenSession`'s drop, and only while their generation lives.
        let session = if write { pkcs11.open_rw_session_no_drop(slot) } else { pkcs11.open_ro_session_no_drop(slot) }
            .map_err(failed(uri, "opening a session"))?;
        let refused = |session: Session, error: TokenError| {
            let _ = session.close();
            Err(error)
        };
        let pin = match settings.pin(uri) {
            Ok(pin) => pin,
            Err(error) => return refused(session, error),
        };
        match session.login(UserType::User, Some(&pin)) {
            // Login is per token and application: another session of this process did it.
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange, _)) => {
                return refused(session, TokenError::WrongPin { token: uri.token_shown(), source_shown: settings.pin_shown(uri) });
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => return refused(session, TokenError::PinLocked { token: uri.token_shown() }),
            Err(error) => return refused(session, failed(uri, "logging in")(error)),
        }
        let generation = *generation;
        Ok(Ok(Self { session: Some(session), module: module.clone(), generation }))
    }

    /// The session for one call, while the module cannot restart under it.
    pub(super) fn call(&self, uri: &KeyUri) -> Result<(RwLockReadGuard<'_, u64>, &Session), TokenError> {
        let generation = self.module.generation.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &self.session {
            Some(session) if *generation == self.generation => Ok((generation, session)),
            _ => Err(TokenError::Failed {
                token: uri.token_shown(),
                during: "using its session",
                reason: "the module was restarted to look for a token that had gone".into(),
            }),
        }
    }

    /// The private key the URI names.
    pub(in crate::pkcs11) fn find_key(&self, uri: &KeyUri) -> Result<ObjectHandle, TokenError> {
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
        template.extend(named_by(uri));
        let (_calls, session) = self.call(uri)?;
        let found = session.find_objects(&template).map_err(failed(uri, "looking for the key"))?;
        match found.as_slice() {
            [key] => Ok(*key),
            [] => Err(TokenError::NoKey { key: uri.key_shown() }),
            many => Err(TokenError::Ambiguous { key: uri.key_shown(), count: many.len() }),
        }
    }

    /// Whether the key is marked sensitive, and whether it is extractable (unknown counts as
    /// the unsafe answer).
    pub(in crate::pkcs11) fn protection(&self, uri: &KeyUri, key: ObjectHandle) -> Result<(bool, bool), TokenError> {
        let (_calls, session) = self.call(uri)?;
        let attributes = session
            .get_attributes(key, &[AttributeType::Sensitive, AttributeType::Extractable])
            .map_err(failed(uri, "reading the key's attributes"))?;
        let (mut sensitive, mut extractable) = (false, true);
        for attribute in attributes {
            match attribute {
                Attribute::Sensitive(value) => sensitive = value,
                Attribute::Extractable(value) => extractable = value,
                _ => {}
            }
        }
        Ok((sensitive, extractable))
    }
}

/// The attributes a URI names its objects by: the label (`object=`) and the id (`id=`), when given.
pub(super) fn named_by(uri: &KeyUri) -> Vec<Attribute> {
    let mut attributes = Vec::new();
    if let Some(label) = &uri.object {
        attributes.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        attributes.push(Attribute::Id(id.clone()));
    }
    attributes
}
