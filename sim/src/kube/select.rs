//! Label and field selectors as list and watch take them.

use serde_json::Value;

use super::errors::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector(Vec<Requirement>);

impl Selector {
    /// Parse a label selector (`a=b,c!=d,e in (x,y),f notin (z),g,!h`).
    ///
    /// # Errors
    /// When the selector is malformed.
    pub fn labels(input: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for part in split_top_level(input) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(Self(requirements))
    }

    /// Parse a field selector (`metadata.name=x,spec.target!=y`).
    ///
    /// # Errors
    /// When the selector is malformed.
    pub fn fields(input: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let requirement = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{input}'; can't understand '{part}'"
                )));
            };
            requirements.push(requirement);
        }
        Ok(Self(requirements))
    }

    /// Whether the object's labels match.
    pub fn matches_labels(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.0
            .iter()
            .all(|r| r.matches(|key| labels.get(key).and_then(Value::as_str).map(str::to_string)))
    }

    /// Whether the object's fields match (any dotted path, e.g. `spec.target`).
    pub fn matches_fields(&self, object: &Value) -> bool {
        self.0.iter().all(|r| {
            r.matches(|path| {
                let mut value = object;
                for segment in path.split('.') {
                    value = value.get(segment)?;
                }
                match value {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    other => Some(other.to_string()),
                }
            })
        })
    }
}

impl Requirement {
    fn matches(&self, lookup: impl Fn(&str) -> Option<String>) -> bool {
        match self {
            Self::Equals(k, v) => lookup(k).as_deref() == Some(v.as_str()),
            // A missing field counts as "" for field selectors and "not equal" for labels.
            Self::NotEquals(k, v) => lookup(k).as_deref() != Some(v.as_str()),
            Self::In(k, vs) => lookup(k).is_some_and(|x| vs.contains(&x)),
            Self::NotIn(k, vs) => lookup(k).is_none_or(|x| !vs.contains(&x)),
            Self::Exists(k) => lookup(k).is_some(),
            Self::NotExists(k) => lookup(k).is_none(),
        }
    }
}

fn split_top_level(input: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&input[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<Requirement, ApiError> {
    let bad = || ApiError::bad_request(format!("unable to parse requirement: '{part}'"));
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::NotExists(key.trim().into()));
    }
    for (op, negate) in [(" notin ", true), (" in ", false)] {
        if let Some((key, rest)) = part.split_once(op) {
            let values = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(bad)?;
            let values: Vec<String> = values
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            let key = key.trim().to_string();
            return Ok(if negate {
                Requirement::NotIn(key, values)
            } else {
                Requirement::In(key, values)
            });
        }
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Requirement::NotEquals(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::Equals(k.trim().into(), v.trim().into()));
    }
    if part.contains(' ') {
        return Err(bad());
    }
    Ok(Requirement::Exists(part.into()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn label_selectors_cover_every_operator() {
        let object = json!({"metadata": {"labels": {"team": "shop", "tier": "web"}}});
        for (selector, expected) in [
            ("team=shop", true),
            ("team==shop,tier=web", true),
            ("team!=shop", false),
            ("team in (shop,pay)", true),
            ("team notin (shop)", false),
            ("tier", true),
            ("!tier", false),
            ("missing notin (x)", true),
            ("", true),
        ] {
            assert_eq!(
                Selector::labels(selector).unwrap().matches_labels(&object),
                expected,
                "{selector}"
            );
        }
        assert!(Selector::labels("team in shop").is_err());
    }

    #[test]
    fn field_selectors_follow_dotted_paths() {
        let object = json!({"metadata": {"name": "a", "namespace": "n"}, "spec": {"target": "t"}});
        assert!(
            Selector::fields("metadata.name=a,spec.target=t")
                .unwrap()
                .matches_fields(&object)
        );
        assert!(
            !Selector::fields("spec.target!=t")
                .unwrap()
                .matches_fields(&object)
        );
        assert!(Selector::fields("nonsense").is_err());
    }
}
