//! `${NAME}` and `${services.X.env.NAME}` in env values, args and probe addresses.

use std::collections::{BTreeMap, HashMap};

/// One piece of a template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Lit(String),
    /// `${NAME}`: the service's own environment.
    Own(String),
    /// `${services.X.env.NAME}`: another service's environment.
    Other {
        service: String,
        name: String,
    },
}

/// Splits a template; `$$` is a literal `$`.
pub fn parse(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        lit.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            lit.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| {
                format!("unclosed `${{` in {text:?}; write `${{NAME}}`, or `$$` for a literal `$`")
            })?;
            let reference = &body[..end];
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(parse_reference(reference)?);
            rest = &body[end + 1..];
        } else {
            lit.push('$');
            rest = after;
        }
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    Ok(pieces)
}

fn parse_reference(r: &str) -> Result<Piece, String> {
    let valid = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if let Some(path) = r.strip_prefix("services.") {
        if let Some((service, name)) = path.split_once(".env.") {
            if !service.is_empty() && valid(name) {
                return Ok(Piece::Other {
                    service: service.to_string(),
                    name: name.to_string(),
                });
            }
        }
        return Err(format!(
            "invalid reference `${{{r}}}`; expected `${{services.NAME.env.VAR}}`"
        ));
    }
    if valid(r) {
        Ok(Piece::Own(r.to_string()))
    } else {
        Err(format!(
            "invalid reference `${{{r}}}`; expected `${{VAR}}` or `${{services.NAME.env.VAR}}`"
        ))
    }
}

/// A service's variables before interpolation.
#[derive(Debug, Default)]
pub struct Layers {
    /// Inherited and env-file values: literal, lower precedence.
    pub base: BTreeMap<String, String>,
    /// `env = {}` values as templates: higher precedence.
    pub declared: BTreeMap<String, Vec<Piece>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    InProgress,
    Done(Option<String>),
}

/// Resolves every variable of every service, memoised, with cycle detection.
pub struct Resolver<'a> {
    layers: &'a BTreeMap<String, Layers>,
    slots: HashMap<(String, String), Slot>,
}

impl<'a> Resolver<'a> {
    pub fn new(layers: &'a BTreeMap<String, Layers>) -> Self {
        Resolver {
            layers,
            slots: HashMap::new(),
        }
    }

    /// The value of `name` in `service`'s final env; `Ok(None)` when it is not defined.
    pub fn var(&mut self, service: &str, name: &str) -> Result<Option<String>, String> {
        let key = (service.to_string(), name.to_string());
        match self.slots.get(&key) {
            Some(Slot::Done(v)) => return Ok(v.clone()),
            Some(Slot::InProgress) => {
                return Err(format!(
                    "`{name}` of service `{service}` refers back to itself through other variables"
                ))
            }
            None => {}
        }
        let layers = self
            .layers
            .get(service)
            .ok_or_else(|| format!("no service named `{service}` in this config"))?;
        let value = match layers.declared.get(name) {
            Some(pieces) => {
                self.slots.insert(key.clone(), Slot::InProgress);
                let res = self.render(service, Some(name), pieces);
                self.slots.remove(&key);
                Some(res?)
            }
            None => layers.base.get(name).cloned(),
        };
        self.slots.insert(key, Slot::Done(value.clone()));
        Ok(value)
    }

    /// Renders a template in `service`'s context. `own` is the variable being defined, whose
    /// self-reference (`PATH = "/opt/bin:${PATH}"`) reads the lower layers.
    pub fn render(
        &mut self,
        service: &str,
        own: Option<&str>,
        pieces: &[Piece],
    ) -> Result<String, String> {
        let mut out = String::new();
        for piece in pieces {
            match piece {
                Piece::Lit(s) => out.push_str(s),
                Piece::Own(name) if Some(name.as_str()) == own => {
                    let base = self.layers.get(service).and_then(|l| l.base.get(name));
                    match base {
                        Some(v) => out.push_str(v),
                        None => {
                            return Err(format!(
                                "`${{{name}}}` refers to itself and nothing below it (inherit_env, env_file) defines it"
                            ))
                        }
                    }
                }
                Piece::Own(name) => match self.var(service, name)? {
                    Some(v) => out.push_str(&v),
                    None => {
                        return Err(format!(
                            "`${{{name}}}` is not defined for service `{service}`: declare it in env, an env_file or inherit_env"
                        ))
                    }
                },
                Piece::Other { service: other, name } => {
                    if !self.layers.contains_key(other) {
                        return Err(format!("`${{services.{other}.env.{name}}}` names no service of this config"));
                    }
                    match self.var(other, name)? {
                        Some(v) => out.push_str(&v),
                        None => {
                            return Err(format!(
                                "`${{services.{other}.env.{name}}}`: service `{other}` has no variable `{name}`"
                            ))
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(entries: &[(&str, &[(&str, &str)])]) -> BTreeMap<String, Layers> {
        entries
            .iter()
            .map(|(svc, vars)| {
                let declared = vars
                    .iter()
                    .map(|(k, v)| (k.to_string(), parse(v).unwrap()))
                    .collect();
                (
                    svc.to_string(),
                    Layers {
                        base: BTreeMap::new(),
                        declared,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn parses_templates() {
        assert_eq!(parse("a$$b").unwrap(), vec![Piece::Lit("a$b".into())]);
        assert_eq!(
            parse("http://x:${services.sm.env.PORT}/").unwrap(),
            vec![
                Piece::Lit("http://x:".into()),
                Piece::Other {
                    service: "sm".into(),
                    name: "PORT".into()
                },
                Piece::Lit("/".into())
            ]
        );
        assert!(parse("${open").is_err());
        assert!(parse("${services.x}").is_err());
    }

    #[test]
    fn resolves_across_services() {
        let l = layers(&[
            ("sm", &[("PORT", "3001")]),
            ("hub", &[("URL", "http://h:${services.sm.env.PORT}")]),
        ]);
        let mut r = Resolver::new(&l);
        assert_eq!(
            r.var("hub", "URL").unwrap().as_deref(),
            Some("http://h:3001")
        );
    }

    #[test]
    fn detects_cycles_and_unknowns() {
        let l = layers(&[
            ("a", &[("X", "${services.b.env.Y}")]),
            ("b", &[("Y", "${services.a.env.X}")]),
        ]);
        let err = Resolver::new(&l).var("a", "X").unwrap_err();
        assert!(err.contains("refers back"), "{err}");
        let l = layers(&[("a", &[("X", "${NOPE}")])]);
        assert!(Resolver::new(&l)
            .var("a", "X")
            .unwrap_err()
            .contains("not defined"));
    }
}
