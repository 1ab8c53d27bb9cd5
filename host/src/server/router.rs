//! Path routing: prefixes on segment boundaries, `:name` segments bind parameters, and the
//! most specific route wins.

use std::collections::BTreeMap;

/// Routes to `T`s (the server's: a handler and its rule for callers), most specific first.
pub struct Router<T> {
    routes: Vec<(Vec<String>, String, T)>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Self { routes: Vec::new() }
    }
}

impl<T> std::fmt::Debug for Router<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.routes.iter().map(|(_, p, _)| p)).finish()
    }
}

/// A matched route.
#[derive(Debug)]
pub struct RouteMatch<'a, T> {
    /// The route's pattern as configured.
    pub pattern: &'a str,
    /// What it routes to.
    pub target: &'a T,
    /// Values of `:name` segments.
    pub params: BTreeMap<String, String>,
}

fn segments(path: &str) -> Vec<String> {
    path.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

impl<T> Router<T> {
    /// Adds a route for `pattern`.
    pub fn add(&mut self, pattern: &str, target: T) {
        self.routes.push((segments(pattern), pattern.to_string(), target));
        // More segments first; among equals, literal segments before parameters.
        self.routes.sort_by_key(|(segs, _, _)| (std::cmp::Reverse(segs.len()), segs.iter().filter(|s| s.starts_with(':')).count()));
    }

    /// The most specific route whose pattern is a segment prefix of `path`.
    pub fn route(&self, path: &str) -> Option<RouteMatch<'_, T>> {
        let path = segments(path);
        'routes: for (pattern, text, target) in &self.routes {
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
            return Some(RouteMatch { pattern: text, target, params });
        }
        None
    }
}
