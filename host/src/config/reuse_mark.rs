//! The mark `edgemtls build` leaves in a component it builds: its handler serves request after
//! request on one instance (the JavaScript SDK's incoming handler), so a route serving it
//! reuses instances unless it says otherwise, as Cloudflare Workers and Zuplo do.
//!
//! The mark is a custom section right after the component's preamble, so telling whether a
//! file carries it reads a few dozen bytes, not the 12 MiB component.

use std::io::Read as _;
use std::path::Path;

/// The custom section's name; its content is empty.
const NAME: &[u8] = b"edgemtls:serves-many-requests";
/// A component's preamble: `\0asm`, version 0x0d, layer 1.
const COMPONENT_PREAMBLE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// `component` with the mark, or `None` when it is not a component.
pub fn with_reuse_mark(component: &[u8]) -> Option<Vec<u8>> {
    let rest = component.strip_prefix(&COMPONENT_PREAMBLE)?;
    if rest.starts_with(&section()) {
        return Some(component.to_vec());
    }
    let mut marked = Vec::with_capacity(component.len() + NAME.len() + 2);
    marked.extend_from_slice(&COMPONENT_PREAMBLE);
    marked.extend_from_slice(&section());
    marked.extend_from_slice(rest);
    Some(marked)
}

/// Whether the component file at `path` carries the mark; `false` when it cannot be read
/// (loading it reports why).
pub fn has_reuse_mark(path: &Path) -> bool {
    let expected = [&COMPONENT_PREAMBLE[..], &section()].concat();
    let mut start = vec![0; expected.len()];
    std::fs::File::open(path).and_then(|mut file| file.read_exact(&mut start)).is_ok() && start == expected
}

/// The section: id 0 (custom), its size, then the name (its length first). Both lengths are
/// below 128, so each is one LEB128 byte.
fn section() -> Vec<u8> {
    let mut section = vec![0, NAME.len() as u8 + 1, NAME.len() as u8];
    section.extend_from_slice(NAME);
    section
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_component_is_still_a_valid_component_and_is_told_apart() -> anyhow::Result<()> {
        // The smallest component: its preamble alone.
        let component = COMPONENT_PREAMBLE.to_vec();
        let marked = with_reuse_mark(&component).ok_or_else(|| anyhow::anyhow!("not a component"))?;
        wasmtime::component::Component::new(&wasmtime::Engine::default(), &marked)?;
        assert_eq!(with_reuse_mark(&marked).as_deref(), Some(&marked[..]), "marking twice changes nothing");
        let dir = tempfile::tempdir()?;
        let (plain, with_mark) = (dir.path().join("plain.wasm"), dir.path().join("marked.wasm"));
        std::fs::write(&plain, &component)?;
        std::fs::write(&with_mark, &marked)?;
        assert!(has_reuse_mark(&with_mark) && !has_reuse_mark(&plain) && !has_reuse_mark(&dir.path().join("missing.wasm")));
        assert_eq!(with_reuse_mark(b"\0asm\x01\0\0\0"), None, "a core module is not marked");
        Ok(())
    }
}
