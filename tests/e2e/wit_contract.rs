//! The guest contract never hands out key material.

use std::path::Path;

use wit_parser::{Resolve, Type, TypeDefKind};

fn carries_bytes(resolve: &Resolve, ty: &Type) -> bool {
    let Type::Id(id) = ty else { return false };
    match &resolve.types[*id].kind {
        TypeDefKind::List(Type::U8) => true,
        TypeDefKind::List(inner) | TypeDefKind::Option(inner) => carries_bytes(resolve, inner),
        TypeDefKind::Result(r) => {
            r.ok.as_ref().is_some_and(|t| carries_bytes(resolve, t)) || r.err.as_ref().is_some_and(|t| carries_bytes(resolve, t))
        }
        TypeDefKind::Tuple(t) => t.types.iter().any(|t| carries_bytes(resolve, t)),
        TypeDefKind::Record(r) => r.fields.iter().any(|f| carries_bytes(resolve, &f.ty)),
        TypeDefKind::Variant(v) => v.cases.iter().any(|c| c.ty.as_ref().is_some_and(|t| carries_bytes(resolve, t))),
        TypeDefKind::Type(t) => carries_bytes(resolve, t),
        _ => false,
    }
}

#[test]
fn the_mtls_extension_returns_no_bytes() -> anyhow::Result<()> {
    let mut resolve = Resolve::default();
    resolve.push_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit"))?;
    let (package_id, _) = resolve
        .packages
        .iter()
        .find(|(_, p)| p.name.namespace == "edgemtls" && p.name.name == "mtls")
        .ok_or_else(|| anyhow::anyhow!("package edgemtls:mtls not found"))?;
    let mut functions = 0;
    for (_, interface_id) in &resolve.packages[package_id].interfaces {
        for (name, function) in &resolve.interfaces[*interface_id].functions {
            functions += 1;
            if let Some(result) = &function.result {
                assert!(!carries_bytes(&resolve, result), "{name} returns bytes");
            }
        }
    }
    assert_eq!(
        functions, 12,
        "the extension has twelve functions: outgoing.handle and outgoing.failure (why a request failed), \
         outgoing.send (a request as its parts, answered in one call), next-request.present and \
         next-request.clear (a name for a built-in HTTP client's next request), forward.forward \
         (proxying in the host), pass-through.respond and respond-with-body (answering with an \
         upstream's response or an unread body in the host), and js-requests.head, send, wait and \
         respond (the JavaScript SDK's requests and answers in one call each)"
    );
    Ok(())
}

/// The names a component imports (its top level).
fn component_imports(path: &str) -> anyhow::Result<Vec<String>> {
    let bytes = std::fs::read(path)?;
    let mut names = Vec::new();
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        match payload? {
            wasmparser::Payload::ModuleSection { .. } | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    names.push(import?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

/// A handler built with the SDK that neither fetches nor forwards imports nothing of
/// edgemtls: it stays a plain `wasi:http` component that runs on any wasi:http host
/// (`wasmtime serve`, Spin). The SDK's forward is reached through a trait object for this.
#[test]
fn an_sdk_handler_that_sends_nothing_imports_only_wasi() -> anyhow::Result<()> {
    let echo = component_imports(edgemtls_e2e::guests::CALLER_ECHO)?;
    assert!(!echo.is_empty() && echo.iter().all(|name| name.starts_with("wasi:")), "caller-echo imports {echo:?}");
    let probe = component_imports(edgemtls_e2e::guests::MTLS_PROBE)?;
    for interface in ["edgemtls:mtls/outgoing", "edgemtls:mtls/forward"] {
        assert!(probe.iter().any(|name| name.starts_with(interface)), "mtls-probe imports {probe:?}");
    }
    Ok(())
}
