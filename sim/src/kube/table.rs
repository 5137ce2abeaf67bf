//! `meta.k8s.io/v1` Table responses, so `kubectl get` prints a resource's printer columns.

use serde_json::{Value, json};

use super::resources::ServedResource;

/// Render `objects` (full objects of `resource`) as a Table; `resource_version` is the
/// list's. Custom resources get Name plus their additionalPrinterColumns, built-ins Name and
/// Age.
pub fn render(resource: &ServedResource, objects: &[Value], resource_version: &str) -> Value {
    if let Some(columns) = builtin_columns(resource) {
        return builtin_table(resource, &columns, objects, resource_version);
    }
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    let mut paths = Vec::new();
    if resource.printer_columns.is_empty() {
        columns.push(json!({"name": "Age", "type": "date", "format": "", "description": "CreationTimestamp of the object.", "priority": 0}));
        paths.push(".metadata.creationTimestamp".to_string());
    }
    for column in &resource.printer_columns {
        columns.push(json!({
            "name": column.name,
            "type": column.type_,
            "format": column.format.clone().unwrap_or_default(),
            "description": column.description.clone().unwrap_or_default(),
            "priority": column.priority.unwrap_or(0),
        }));
        paths.push(column.json_path.clone());
    }
    let dates: Vec<bool> = columns
        .iter()
        .skip(1)
        .map(|c| c["type"] == "date")
        .collect();
    let now = k8s_openapi::jiff::Timestamp::now();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = vec![object["metadata"]["name"].clone()];
            // The server renders date columns as ages ("5m"), as kubectl prints them.
            cells.extend(paths.iter().zip(&dates).map(|(p, date)| {
                match (cell(object, p), date) {
                    (Value::String(time), true) => time
                        .parse::<k8s_openapi::jiff::Timestamp>()
                        .map_or(Value::String(time), |t| {
                            json!(human_age(now.as_second() - t.as_second()))
                        }),
                    (value, _) => value,
                }
            }));
            let metadata = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object["metadata"],
            });
            json!({"cells": cells, "object": metadata})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// The columns the API server's own printers give the built-ins people list most.
fn builtin_columns(resource: &ServedResource) -> Option<Vec<&'static str>> {
    Some(match (resource.group.as_str(), resource.plural.as_str()) {
        ("" | "events.k8s.io", "events") => {
            vec!["Last Seen", "Type", "Reason", "Object", "Message"]
        }
        ("apps", "deployments") => vec!["Name", "Ready", "Up-to-date", "Available", "Age"],
        ("", "namespaces") => vec!["Name", "Status", "Age"],
        ("", "secrets") => vec!["Name", "Type", "Data", "Age"],
        ("", "configmaps") => vec!["Name", "Data", "Age"],
        _ => return None,
    })
}

fn builtin_table(
    resource: &ServedResource,
    columns: &[&str],
    objects: &[Value],
    resource_version: &str,
) -> Value {
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let age = |time: &Value| {
        time.as_str()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map_or(Value::Null, |t| json!(human_age(now - t.as_second())))
    };
    let count = |v: &Value| v.as_object().map_or(0, serde_json::Map::len);
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells = match (resource.group.as_str(), resource.plural.as_str()) {
                (_, "events") => {
                    // Stored in the core form; the newest of the times it carries.
                    let seen = [&o["lastTimestamp"], &o["series"]["lastObservedTime"], &o["eventTime"]]
                        .into_iter()
                        .find(|t| t.is_string())
                        .map_or(Value::Null, &age);
                    let regarding = if o["involvedObject"].is_object() {
                        &o["involvedObject"]
                    } else {
                        &o["regarding"]
                    };
                    let object = format!(
                        "{}/{}",
                        regarding["kind"].as_str().unwrap_or_default().to_lowercase(),
                        regarding["name"].as_str().unwrap_or_default()
                    );
                    let message = if o["message"].is_string() { &o["message"] } else { &o["note"] };
                    vec![seen, o["type"].clone(), o["reason"].clone(), json!(object), message.clone()]
                }
                ("apps", "deployments") => {
                    let status = &o["status"];
                    let number = |v: &Value| v.as_i64().unwrap_or(0);
                    vec![
                        json!(format!(
                            "{}/{}",
                            number(&status["readyReplicas"]),
                            o["spec"]["replicas"].as_i64().unwrap_or(1)
                        )),
                        json!(number(&status["updatedReplicas"])),
                        json!(number(&status["availableReplicas"])),
                    ]
                }
                ("", "namespaces") => vec![o["status"]["phase"].clone()],
                ("", "secrets") => vec![
                    o["type"].clone(),
                    json!(count(&o["data"])),
                ],
                ("", "configmaps") => {
                    vec![json!(count(&o["data"]) + count(&o["binaryData"]))]
                }
                _ => Vec::new(),
            };
            let mut row = Vec::new();
            if columns[0] == "Name" {
                row.push(o["metadata"]["name"].clone());
            }
            row.extend(cells);
            if columns.last() == Some(&"Age") {
                row.push(age(&o["metadata"]["creationTimestamp"]));
            }
            let metadata = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]});
            json!({"cells": row, "object": metadata})
        })
        .collect();
    let definitions: Vec<Value> = columns
        .iter()
        .map(|name| {
            let format = if *name == "Name" { "name" } else { "" };
            json!({"name": name, "type": "string", "format": format, "description": "", "priority": 0})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

/// An age as the API server prints it (`45s`, `5m30s`, `3h`, `2d4h`, ...).
pub fn human_age(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let seconds = seconds.max(0);
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    match () {
        () if seconds < 120 => format!("{seconds}s"),
        () if minutes < 10 && seconds % 60 == 0 => format!("{minutes}m"),
        () if minutes < 10 => format!("{minutes}m{}s", seconds % 60),
        () if minutes < 180 => format!("{minutes}m"),
        () if hours < 8 && minutes % 60 == 0 => format!("{hours}h"),
        () if hours < 8 => format!("{hours}h{}m", minutes % 60),
        () if hours < 48 => format!("{hours}h"),
        () if hours < 24 * 8 && hours % 24 == 0 => format!("{}d", hours / 24),
        () if hours < 24 * 8 => format!("{}d{}h", hours / 24, hours % 24),
        () if hours < 24 * 365 * 2 => format!("{}d", hours / 24),
        () if hours < 24 * 365 * 8 => format!("{}y{}d", hours / 24 / 365, (hours / 24) % 365),
        () => format!("{}y", hours / 24 / 365),
    }
}

/// Evaluate the JSONPath subset printer columns use: `.a.b`, `.a[0]`, and
/// `.a[?(@.k=="v")].b`. A missing value is an empty cell (`null`), as the server renders it.
fn cell(object: &Value, path: &str) -> Value {
    let mut current = vec![object.clone()];
    let path = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    for segment in split(path) {
        let mut next = Vec::new();
        for value in current {
            if let Some(filter) = segment
                .strip_prefix("[?(@.")
                .and_then(|s| s.strip_suffix(")]"))
            {
                let Some((field, expected)) = filter.split_once("==") else {
                    continue;
                };
                let expected = expected.trim().trim_matches('"').trim_matches('\'');
                for item in value.as_array().into_iter().flatten() {
                    if item.get(field.trim()).and_then(Value::as_str) == Some(expected) {
                        next.push(item.clone());
                    }
                }
            } else if let Some(index) = segment.strip_prefix('[').and_then(|s| s.strip_suffix(']'))
            {
                if let Some(item) = index.parse::<usize>().ok().and_then(|i| value.get(i)) {
                    next.push(item.clone());
                }
            } else if let Some(child) = value.get(segment.as_str()) {
                next.push(child.clone());
            }
        }
        current = next;
    }
    current.into_iter().next().unwrap_or(Value::Null)
}

fn split(path: &str) -> Vec<String> {
    let mut segments = Vec::new();
    let mut buffer = String::new();
    let mut depth = 0;
    for c in path.chars() {
        match c {
            '.' if depth == 0 => {
                if !buffer.is_empty() {
                    segments.push(std::mem::take(&mut buffer));
                }
            }
            '[' => {
                if depth == 0 && !buffer.is_empty() {
                    segments.push(std::mem::take(&mut buffer));
                }
                depth += 1;
                buffer.push(c);
            }
            ']' => {
                depth -= 1;
                buffer.push(c);
                if depth == 0 {
                    segments.push(std::mem::take(&mut buffer));
                }
            }
            _ => buffer.push(c),
        }
    }
    if !buffer.is_empty() {
        segments.push(buffer);
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_column_paths_pick_conditions_by_type() {
        let object = json!({"spec": {"target": "t"}, "status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True", "reason": "Granted"}]}});
        assert_eq!(cell(&object, ".spec.target"), json!("t"));
        assert_eq!(
            cell(&object, r#".status.conditions[?(@.type=="Ready")].status"#),
            json!("True")
        );
        assert_eq!(cell(&object, ".status.conditions[0].type"), json!("A"));
        assert_eq!(cell(&object, ".status.missing"), Value::Null);
    }

    #[test]
    fn ages_read_like_kubectls() {
        for (seconds, expected) in [
            (5, "5s"),
            (119, "119s"),
            (300, "5m"),
            (330, "5m30s"),
            (7200, "120m"),
            (4 * 3600 + 60, "4h1m"),
            (30 * 3600, "30h"),
            (3 * 86_400 + 3600, "3d1h"),
            (40 * 86_400, "40d"),
        ] {
            assert_eq!(human_age(seconds), expected);
        }
    }
}
