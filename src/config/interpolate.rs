//! `${NAME}` and `${services.X.env.NAME}` in env values, args and probe addresses.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use super::schema::{MAX_EXPANDED_TOTAL, MAX_EXPANDED_VALUE, MAX_INTERPOLATION_DEPTH};
use super::secrets::{is_secret_name, mask_url_passwords, MASK};

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

/// A resolved value and how it may be shown: secret variables (by name, see
/// [`secrets`](super::secrets)) replaced by a mask and URL passwords masked, so a token
/// passed as `args = ["--token=${API_TOKEN}"]` never reaches a log, `show` or stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub value: String,
    pub shown: String,
}

#[derive(Debug, Clone)]
enum Slot {
    InProgress,
    Done(Option<Rc<Rendered>>),
    /// Failed once; the failure is recorded in `errors` where it started.
    Failed,
}

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fail {
    /// A problem in the template itself: report it at the template's position.
    Msg(String),
    /// A variable it uses failed; that failure is in [`Resolver::errors`] already.
    Nested,
    /// The chain of references is deeper than [`MAX_INTERPOLATION_DEPTH`]; reported by the
    /// outermost variable (or template) of the chain.
    TooDeep(Vec<String>),
}

impl Fail {
    /// The message for a failure at the top of a chain; None when reported elsewhere.
    pub fn message(self, what: &str) -> Option<String> {
        match self {
            Fail::Msg(m) => Some(m),
            Fail::Nested => None,
            Fail::TooDeep(chain) => Some(format!(
                "{what}: `${{…}}` references nest deeper than {MAX_INTERPOLATION_DEPTH} levels ({} → …); use fewer levels of variables",
                chain.iter().take(6).map(|n| format!("`{n}`")).collect::<Vec<_>>().join(" → ")
            )),
        }
    }
}

/// Resolves every variable of every service, memoised, with cycle detection and bounds on
/// depth and expanded size: recursion never goes deeper than [`MAX_INTERPOLATION_DEPTH`],
/// one value never grows past [`MAX_EXPANDED_VALUE`], and all values together never past
/// [`MAX_EXPANDED_TOTAL`] (values that double at each level would otherwise need 2^N bytes).
pub struct Resolver<'a> {
    layers: &'a BTreeMap<String, Layers>,
    slots: HashMap<(String, String), Slot>,
    secret_keys: &'a [String],
    /// Bytes produced so far (values and their shown forms).
    total: usize,
    /// (service, variable, message) of every variable that failed where it failed.
    pub errors: Vec<(String, String, String)>,
}

impl<'a> Resolver<'a> {
    pub fn new(layers: &'a BTreeMap<String, Layers>) -> Self {
        Self::with_secrets(layers, &[])
    }

    pub fn with_secrets(layers: &'a BTreeMap<String, Layers>, secret_keys: &'a [String]) -> Self {
        Resolver {
            layers,
            slots: HashMap::new(),
            secret_keys,
            total: 0,
            errors: Vec::new(),
        }
    }

    /// The value of `name` in `service`'s final env; `Ok(None)` when it is not defined.
    pub fn var(&mut self, service: &str, name: &str) -> Result<Option<Rc<Rendered>>, Fail> {
        self.var_at(service, name, 0)
    }

    fn var_at(
        &mut self,
        service: &str,
        name: &str,
        depth: usize,
    ) -> Result<Option<Rc<Rendered>>, Fail> {
        let key = (service.to_string(), name.to_string());
        match self.slots.get(&key) {
            Some(Slot::Done(v)) => return Ok(v.clone()),
            Some(Slot::Failed) => return Err(Fail::Nested),
            Some(Slot::InProgress) => {
                return Err(Fail::Msg(format!(
                    "`{name}` of service `{service}` refers back to itself through other variables"
                )))
            }
            None => {}
        }
        let layers = self
            .layers
            .get(service)
            .ok_or_else(|| Fail::Msg(format!("no service named `{service}` in this config")))?;
        let secret = is_secret_name(name, self.secret_keys);
        let value = match layers.declared.get(name) {
            Some(pieces) => {
                if depth >= MAX_INTERPOLATION_DEPTH {
                    return Err(Fail::TooDeep(vec![name.to_string()]));
                }
                self.slots.insert(key.clone(), Slot::InProgress);
                let res = self.render_at(service, Some(name), pieces, depth + 1);
                match res {
                    Ok(mut r) => {
                        if secret {
                            r.shown = MASK.to_string();
                        }
                        Some(Rc::new(r))
                    }
                    Err(fail) => {
                        self.slots.insert(key, Slot::Failed);
                        return Err(match fail {
                            Fail::TooDeep(mut chain) if depth > 0 => {
                                chain.insert(0, name.to_string());
                                Fail::TooDeep(chain)
                            }
                            f @ (Fail::TooDeep(_) | Fail::Msg(_)) => {
                                let what = format!("`{name}` of service `{service}`");
                                if let Some(m) = f.message(&what) {
                                    self.errors.push((service.to_string(), name.to_string(), m));
                                }
                                Fail::Nested
                            }
                            Fail::Nested => Fail::Nested,
                        });
                    }
                }
            }
            None => layers.base.get(name).map(|v| {
                Rc::new(Rendered {
                    value: v.clone(),
                    shown: if secret {
                        MASK.to_string()
                    } else {
                        mask_url_passwords(v).into_owned()
                    },
                })
            }),
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
    ) -> Result<Rendered, Fail> {
        self.render_at(service, own, pieces, 0)
    }

    fn render_at(
        &mut self,
        service: &str,
        own: Option<&str>,
        pieces: &[Piece],
        depth: usize,
    ) -> Result<Rendered, Fail> {
        let mut out = String::new();
        let mut shown = String::new();
        for piece in pieces {
            match piece {
                Piece::Lit(s) => {
                    out.push_str(s);
                    shown.push_str(s);
                }
                Piece::Own(name) if Some(name.as_str()) == own => {
                    let base = self.layers.get(service).and_then(|l| l.base.get(name));
                    match base {
                        Some(v) => {
                            out.push_str(v);
                            if is_secret_name(name, self.secret_keys) {
                                shown.push_str(MASK);
                            } else {
                                shown.push_str(v);
                            }
                        }
                        None => {
                            return Err(Fail::Msg(format!(
                                "`${{{name}}}` refers to itself and nothing below it (inherit_env, env_file) defines it"
                            )))
                        }
                    }
                }
                Piece::Own(name) => match self.var_at(service, name, depth)? {
                    Some(v) => {
                        out.push_str(&v.value);
                        shown.push_str(&v.shown);
                    }
                    None => {
                        return Err(Fail::Msg(format!(
                            "`${{{name}}}` is not defined for service `{service}`: declare it in env, an env_file or inherit_env"
                        )))
                    }
                },
                Piece::Other { service: other, name } => {
                    if !self.layers.contains_key(other) {
                        return Err(Fail::Msg(format!("`${{services.{other}.env.{name}}}` names no service of this config")));
                    }
                    match self.var_at(other, name, depth)? {
                        Some(v) => {
                            out.push_str(&v.value);
                            shown.push_str(&v.shown);
                        }
                        None => {
                            return Err(Fail::Msg(format!(
                                "`${{services.{other}.env.{name}}}`: service `{other}` has no variable `{name}`"
                            )))
                        }
                    }
                }
            }
            // Checked after every piece, so a value that doubles stops at the limit instead
            // of allocating its full size first.
            if out.len() > MAX_EXPANDED_VALUE {
                return Err(Fail::Msg(format!(
                    "expands to more than {} after interpolation (the limit for one value; Linux refuses longer ones at exec)",
                    super::schema::show_size(MAX_EXPANDED_VALUE as u64)
                )));
            }
        }
        let shown = mask_url_passwords(&shown).into_owned();
        self.total += out.len() + shown.len();
        if self.total > MAX_EXPANDED_TOTAL {
            return Err(Fail::Msg(format!(
                "the values of this config expand to more than {} in all after interpolation; use fewer or shorter `${{…}}` references",
                super::schema::show_size(MAX_EXPANDED_TOTAL as u64)
            )));
        }
        Ok(Rendered { value: out, shown })
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
        assert_eq!(r.var("hub", "URL").unwrap().unwrap().value, "http://h:3001");
    }

    #[test]
    fn detects_cycles_and_unknowns() {
        let l = layers(&[
            ("a", &[("X", "${services.b.env.Y}")]),
            ("b", &[("Y", "${services.a.env.X}")]),
        ]);
        let mut r = Resolver::new(&l);
        assert_eq!(r.var("a", "X").unwrap_err(), Fail::Nested);
        assert!(r.errors[0].2.contains("refers back"), "{:?}", r.errors);
        let l = layers(&[("a", &[("X", "${NOPE}")])]);
        let mut r = Resolver::new(&l);
        assert_eq!(r.var("a", "X").unwrap_err(), Fail::Nested);
        assert_eq!(r.errors[0].1, "X");
        assert!(r.errors[0].2.contains("not defined"));
    }
}
