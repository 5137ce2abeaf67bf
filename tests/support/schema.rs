//! A small OpenAPI v3 (structural schema) validator with the API server's field paths, for the
//! checks the API server makes before CEL: types, required fields, enums, lengths, item counts
//! and unknown fields (as `kubectl apply`'s default strict field validation reports them).

use serde_json::Value;

/// Every violation of `schema` in `value`, as `path: message` lines.
pub fn structural_errors(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    walk(schema, value, "", &mut errors);
    errors
}

fn walk(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            errors.push(format!("{path}: Invalid value: null: must not be null"));
        }
        return;
    }
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        && schema.get("properties").is_none()
    {
        return;
    }
    let expected = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let type_ok = match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        errors.push(format!(
            "{path}: Invalid value: {value}: must be of type {expected}"
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(ToString::to_string).collect();
        errors.push(format!(
            "{path}: Unsupported value: {value}: supported values: {}",
            list.join(", ")
        ));
    }
    match value {
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                errors.push(format!(
                    "{path}: Too long: may not be more than {max} bytes"
                ));
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                errors.push(format!(
                    "{path}: Invalid value: {value}: should be at least {min} chars long"
                ));
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                errors.push(format!(
                    "{path}: Too many: {}: must have at most {max} items",
                    items.len()
                ));
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                errors.push(format!(
                    "{path}: Invalid value: should have at least {min} items"
                ));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(required) {
                    errors.push(format!("{}: Required value", join(path, required)));
                }
            }
            for (key, child) in map {
                let child_path = join(path, key);
                if let Some(prop) = properties.and_then(|p| p.get(key)) {
                    walk(prop, child, &child_path, errors);
                } else if let Some(additional) = schema.get("additionalProperties")
                    && additional.is_object()
                {
                    walk(additional, child, &child_path, errors);
                } else if path.is_empty()
                    && matches!(key.as_str(), "apiVersion" | "kind" | "metadata")
                {
                    // Root object fields the API server checks itself.
                } else if schema.get("x-kubernetes-preserve-unknown-fields")
                    != Some(&Value::Bool(true))
                {
                    errors.push(format!("unknown field \"{child_path}\""));
                }
            }
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}
