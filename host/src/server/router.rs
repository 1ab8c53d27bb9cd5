//! Path routing: prefixes on segment boundaries, `:name` segments bind parameters, and the
//! most specific route wins.

use std::collections::BTreeMap;

use crate::runtime::Handler;

/// Routes, most specific first.
#[derive(Default)]
pub struct Router {
    routes: Vec<(Vec<String>, String, Handler)>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.routes.iter().map(|(_, p, _)| p)).finish()
    }
}

/// A matched route.
#[derive(Debug)]
pub struct RouteMatch<'a> {
    /// The route's pattern as configured.
    pub pattern: &'a str,
    /// Its handler.
    pub handler: &'a Handler,
    /// Values of `:name` segments.
    pub params: BTreeMap<String, String>,
}

fn segments(path: &str) -> Vec<String> {
    path.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

impl Router {
    /// Adds a route for `pattern`.
    pub fn add(&mut self, pattern: &str, handler: Handler) {
        self.routes.push((segments(pattern), pattern.to_string(), handler));
        // More segments first; among equals, literal segments before parameters.
        self.routes.sort_by_key(|(segs, _, _)| {
            (std::cmp::Reverse(segs.len()), segs.iter().filter(|s| s.starts_with(':')).count())
        });
    }

    /// The most specific route whose pattern is a segment prefix of `path`.
    pub fn route(&self, path: &str) -> Option<RouteMatch<'_>> {
        let path = segments(path);
        'routes: for (pattern, text, handler) in &self.routes {
            if pattern.len() > path.len() {
                continue;
            }
            let mut params = BTreeMap::new();
            for (want, got) in pattern.iter().zip(&path) {
                if let Some(name) = want.strip_prefix(':') {
                    params.insert(name.to_string(), got.clone());
                } else if want != got {
                    continue 'routes;
                }
            }
            return Some(RouteMatch { pattern: text, handler, params });
        }
        None
    }
}
