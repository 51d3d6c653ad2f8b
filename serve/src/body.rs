//! Reading a JSON request body field by field, as FastAPI + pydantic validate A1111's models:
//! every field optional, `null` = absent, numbers given as strings accepted (pydantic's lax
//! mode), and every problem collected so one 422 lists them all. Fields nobody read are the
//! unknown ones (logged once per name by the caller).

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::error::{ApiError, FieldIssue};

/// A request body being read.
#[derive(Debug)]
pub struct Fields {
    map: Map<String, Value>,
    read: BTreeSet<String>,
    issues: Vec<FieldIssue>,
}

impl Fields {
    /// Parses `bytes` as a JSON object (an empty body is an empty object).
    pub fn parse(bytes: &[u8]) -> Result<Fields, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Fields::new(Map::new()));
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Fields::new(map)),
            Ok(_) => Err(ApiError::Invalid(vec![FieldIssue {
                loc: vec!["body".into()],
                msg: "Input should be a valid dictionary or object to extract fields from".into(),
                kind: "model_attributes_type",
            }])),
            Err(e) => Err(ApiError::Invalid(vec![FieldIssue {
                loc: vec!["body".into(), e.column().into()],
                msg: format!("JSON decode error: {e}"),
                kind: "json_invalid",
            }])),
        }
    }

    /// Fields read from an object already parsed (`override_settings`).
    pub fn new(map: Map<String, Value>) -> Fields {
        Fields {
            map,
            read: BTreeSet::new(),
            issues: Vec::new(),
        }
    }

    fn take(&mut self, key: &str) -> Option<&Value> {
        self.read.insert(key.to_owned());
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Records a problem with `key`.
    pub fn invalid(&mut self, key: &str, msg: impl Into<String>, kind: &'static str) {
        self.issues.push(FieldIssue::field(key, msg, kind));
    }

    /// Marks `key` as known without reading it (a field Kiln accepts and has no use for).
    pub fn ignore(&mut self, key: &str) {
        self.read.insert(key.to_owned());
    }

    /// Whether the body has `key` (not null).
    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// A string field.
    pub fn string(&mut self, key: &str) -> Option<String> {
        match self.take(key)? {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.invalid(key, "Input should be a valid string", "string_type");
                None
            }
        }
    }

    /// An integer field (an integral number, or a string holding one).
    pub fn int(&mut self, key: &str) -> Option<i64> {
        let parsed = match self.take(key)? {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        if parsed.is_none() {
            self.invalid(
                key,
                "Input should be a valid integer, unable to parse string as an integer",
                "int_parsing",
            );
        }
        parsed
    }

    /// An integer field that must lie in `min..=max`.
    pub fn int_in(&mut self, key: &str, min: i64, max: i64) -> Option<i64> {
        let v = self.int(key)?;
        if v < min {
            self.invalid(
                key,
                format!("Input should be greater than or equal to {min}"),
                "greater_than_equal",
            );
            None
        } else if v > max {
            self.invalid(
                key,
                format!("Input should be less than or equal to {max}"),
                "less_than_equal",
            );
            None
        } else {
            Some(v)
        }
    }

    /// A number field (a finite number, or a string holding one).
    pub fn float(&mut self, key: &str) -> Option<f64> {
        let parsed = match self.take(key)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|f: &f64| f.is_finite());
        if parsed.is_none() {
            self.invalid(key, "Input should be a valid number", "float_parsing");
        }
        parsed
    }

    /// A boolean field (`true`/`false`, or those words as strings).
    pub fn bool(&mut self, key: &str) -> Option<bool> {
        let parsed = match self.take(key)? {
            Value::Bool(b) => Some(*b),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Some(true),
                "false" | "0" | "no" | "off" => Some(false),
                _ => None,
            },
            Value::Number(n) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => {
                Some(n.as_i64() == Some(1))
            }
            _ => None,
        };
        if parsed.is_none() {
            self.invalid(key, "Input should be a valid boolean", "bool_parsing");
        }
        parsed
    }

    /// Any JSON value.
    pub fn value(&mut self, key: &str) -> Option<Value> {
        self.take(key).cloned()
    }

    /// A list of strings.
    pub fn strings(&mut self, key: &str) -> Option<Vec<String>> {
        let parsed = match self.take(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>(),
            _ => None,
        };
        if parsed.is_none() {
            self.invalid(key, "Input should be a valid list of strings", "list_type");
        }
        parsed
    }

    /// The fields nobody read, in order.
    pub fn unknown(&self) -> Vec<String> {
        self.map
            .keys()
            .filter(|k| !self.read.contains(*k))
            .cloned()
            .collect()
    }

    /// Ok when every field read was valid; else the 422 listing each problem.
    pub fn finish(&mut self) -> Result<(), ApiError> {
        if self.issues.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Invalid(std::mem::take(&mut self.issues)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_lax_as_pydantic_and_every_problem_is_listed() {
        let mut f = Fields::parse(
            br#"{"steps": "20", "cfg_scale": 7, "seed": 3.0, "width": "wide", "tiling": "no",
                 "prompt": 5, "n_iter": null, "extra": 1}"#,
        )
        .expect("parse");
        assert_eq!(f.int("steps"), Some(20));
        assert_eq!(f.float("cfg_scale"), Some(7.0));
        assert_eq!(f.int("seed"), Some(3));
        assert_eq!(f.bool("tiling"), Some(false));
        assert_eq!(f.int("n_iter"), None, "null is absent");
        assert_eq!(f.int("width"), None);
        assert_eq!(f.string("prompt"), None);
        assert_eq!(f.unknown(), ["extra"]);
        let Err(ApiError::Invalid(issues)) = f.finish() else {
            panic!("two invalid fields")
        };
        let locs: Vec<_> = issues.iter().map(|i| i.loc[1].clone()).collect();
        assert_eq!(
            locs,
            [serde_json::json!("width"), serde_json::json!("prompt")]
        );
    }

    #[test]
    fn malformed_json_and_non_objects_are_422() {
        for body in [&b"{\"steps\": 1"[..], b"[1, 2]", b"\"x\"", b"{'a': 1}"] {
            assert!(
                matches!(Fields::parse(body), Err(ApiError::Invalid(_))),
                "{body:?}"
            );
        }
        assert!(Fields::parse(b"  ").is_ok());
    }

    #[test]
    fn ranges_name_the_bound() {
        let mut f = Fields::parse(br#"{"steps": 0, "batch_size": 9}"#).expect("parse");
        assert_eq!(f.int_in("steps", 1, 150), None);
        assert_eq!(f.int_in("batch_size", 1, 8), None);
        let Err(ApiError::Invalid(issues)) = f.finish() else {
            panic!()
        };
        assert_eq!(issues[0].kind, "greater_than_equal");
        assert_eq!(issues[1].kind, "less_than_equal");
    }
}
