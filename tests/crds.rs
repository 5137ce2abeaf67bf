//! The generated CRDs: checked in, structural, documented, and enforcing what the API server
//! would enforce on the example manifests (schema and CEL rules).

mod support;

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};
use support::schema::structural_errors;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn schema_of(kind: &str) -> Value {
    let crd = dbgrant::api::crds()
        .into_iter()
        .find(|crd| crd.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"));
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("CRD has a schema");
    serde_json::to_value(schema).expect("schema serializes")
}

/// What the API server would say about `object`: structural errors, then CEL rule failures.
fn api_server_errors(object: &Value) -> Vec<String> {
    let kind = object["kind"].as_str().expect("kind");
    let schema = schema_of(kind);
    let mut errors = structural_errors(&schema, object);
    if errors.is_empty()
        && let Err(failures) = kube::core::cel::Validator::new().validate(&schema, object, None)
    {
        errors.extend(failures.iter().map(ToString::to_string));
    }
    errors
}

fn read_yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("readable manifest");
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

#[test]
fn the_crd_command_prints_exactly_the_checked_in_files() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dbgrant"))
        .arg("crd")
        .output()
        .expect("dbgrant crd runs");
    assert!(output.status.success(), "dbgrant crd failed: {output:?}");
    let printed = String::from_utf8(output.stdout).expect("utf-8");

    let mut expected = String::new();
    for crd in dbgrant::api::crds() {
        let file = repo().join("crds").join(dbgrant::api::crd_file_name(&crd));
        let on_disk = std::fs::read_to_string(&file).unwrap_or_else(|_| {
            panic!(
                "{} is missing: run `cargo run -- crd --out-dir crds`",
                file.display()
            )
        });
        assert_eq!(
            on_disk,
            serde_saphyr::to_string(&crd).expect("serializes"),
            "{} drifted from the code: run `cargo run -- crd --out-dir crds` and commit",
            file.display()
        );
        expected.push_str("---\n");
        expected.push_str(&on_disk);
    }
    assert_eq!(printed, expected);

    let extra: Vec<_> = std::fs::read_dir(repo().join("crds"))
        .expect("crds/ exists")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            !dbgrant::api::crds()
                .iter()
                .any(|c| dbgrant::api::crd_file_name(c) == *name)
        })
        .collect();
    assert!(extra.is_empty(), "stale files in crds/: {extra:?}");
}

#[test]
fn checked_in_crds_parse_as_custom_resource_definitions() {
    for crd in dbgrant::api::crds() {
        let path = repo().join("crds").join(dbgrant::api::crd_file_name(&crd));
        let text = std::fs::read_to_string(&path).expect("file exists");
        let parsed: CustomResourceDefinition = serde_saphyr::from_str(&text).expect("parses");
        assert_eq!(parsed, crd);
    }
}

/// The API server's structural schema rules: every node has a type (or says it may hold
/// anything), no references, and `properties` and `additionalProperties` never together.
fn structural_violations(schema: &Value, path: &str, out: &mut Vec<String>) {
    let Some(node) = schema.as_object() else {
        out.push(format!("{path}: schema node is not an object"));
        return;
    };
    for forbidden in [
        "$ref",
        "definitions",
        "$defs",
        "oneOf",
        "anyOf",
        "allOf",
        "not",
    ] {
        if node.contains_key(forbidden) {
            out.push(format!("{path}: uses {forbidden}"));
        }
    }
    let open = node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        || node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if !node.contains_key("type") && !open {
        out.push(format!("{path}: no type"));
    }
    if node.contains_key("properties") && node.contains_key("additionalProperties") {
        out.push(format!(
            "{path}: properties and additionalProperties together"
        ));
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            structural_violations(child, &format!("{path}.{name}"), out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = node.get(key).filter(|c| c.is_object()) {
            structural_violations(child, &format!("{path}[{key}]"), out);
        }
    }
}

fn undocumented_fields(schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            let child_path = format!("{path}.{name}");
            let described = child
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| !d.trim().is_empty());
            if !described {
                out.push(child_path.clone());
            }
            undocumented_fields(child, &child_path, out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = schema.get(key).filter(|c| c.is_object()) {
            undocumented_fields(child, path, out);
        }
    }
}

#[test]
fn crd_schemas_are_structural_and_every_spec_field_is_described() {
    for kind in ["DatabaseTarget", "DatabaseAccessGrant"] {
        let schema = schema_of(kind);
        let mut violations = Vec::new();
        structural_violations(&schema, kind, &mut violations);
        assert!(
            violations.is_empty(),
            "{kind} schema is not structural: {violations:#?}"
        );

        let mut undocumented = Vec::new();
        undocumented_fields(&schema["properties"]["spec"], "spec", &mut undocumented);
        assert!(
            undocumented.is_empty(),
            "{kind} fields without description: {undocumented:#?}"
        );
        assert!(
            schema["properties"]["spec"]["properties"]
                .as_object()
                .is_some_and(|p| p.len() >= 3)
        );
    }
}

#[test]
fn conditions_are_a_list_map_keyed_by_type_and_printer_columns_resolve() {
    for crd in dbgrant::api::crds() {
        let version = &crd.spec.versions[0];
        let schema = schema_of(&crd.spec.names.kind);
        let conditions = &schema["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
        assert_eq!(
            crd.spec.names.categories,
            Some(vec!["dbgrant-all".to_string()])
        );
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        for column in version.additional_printer_columns.iter().flatten() {
            // Every column path names a field the schema declares; `[..]` descends into items.
            let mut node = &schema;
            let mut path = column.json_path.as_str();
            while !path.is_empty() {
                if let Some(rest) = path.strip_prefix('[') {
                    let end = rest.find(']').expect("closed bracket");
                    node = &node["items"];
                    path = &rest[end + 1..];
                    continue;
                }
                let rest = path.trim_start_matches('.');
                let end = rest.find(['.', '[']).unwrap_or(rest.len());
                let segment = &rest[..end];
                if segment == "metadata" {
                    break;
                }
                node = &node["properties"][segment];
                assert!(
                    !node.is_null(),
                    "column {} names unknown field {segment}",
                    column.name
                );
                path = &rest[end..];
            }
            assert!(node.get("type").is_some() || column.json_path.starts_with(".metadata"));
        }
    }
}

#[test]
fn every_example_manifest_is_accepted() {
    let dir = repo().join("deploy/examples");
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples exist")
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        for doc in read_yaml_documents(&entry.path()) {
            if doc["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("dbgrant.io/"))
            {
                let errors = api_server_errors(&doc);
                assert!(
                    errors.is_empty(),
                    "{} rejected: {errors:#?}",
                    entry.path().display()
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 4,
        "expected a target and at least three grants, found {checked}"
    );
}

fn example(name: &str) -> Value {
    read_yaml_documents(&repo().join("deploy/examples").join(name)).remove(0)
}

fn assert_rejected(object: &Value, expected: &str) {
    let errors = api_server_errors(object);
    assert!(
        errors.iter().any(|e| e.contains(expected)),
        "expected a rejection mentioning {expected:?}, got {errors:#?}"
    );
}

#[test]
fn a_container_without_a_database_is_rejected() {
    let mut grant = example("20-grant-orders-reader.yaml");
    grant["spec"]["container"] = json!("items");
    assert_rejected(&grant, "container requires database");
}

#[test]
fn a_target_with_two_backends_or_none_is_rejected() {
    let mut target = example("10-target-cosmos-demo.yaml");
    target["spec"]["sql"] =
        json!({"kind": "AzureSqlDatabase", "server": "shop.database.windows.net"});
    assert_rejected(&target, "exactly one backend block must be set");

    let mut target = example("10-target-cosmos-demo.yaml");
    target["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("cosmos");
    target["spec"]["allowedRoles"] = json!(["reader"]);
    assert_rejected(&target, "exactly one backend block must be set");
}

#[test]
fn a_malformed_account_id_is_rejected_with_the_expected_shape() {
    for bad in [
        "shop-prod",
        "/subscriptions/not-a-guid/resourceGroups/rg/providers/Microsoft.DocumentDB/databaseAccounts/shop",
        "/subscriptions/6f8f4c2e-3b1a-4d8e-9c71-2a5e0b9d4f10/resourceGroups/rg/providers/Microsoft.Sql/servers/shop",
    ] {
        let mut target = example("10-target-cosmos-demo.yaml");
        target["spec"]["cosmos"]["accountResourceId"] = json!(bad);
        assert_rejected(&target, "must be the full ARM id of a Cosmos DB account");
    }
}

#[test]
fn an_unknown_deletion_policy_is_rejected_with_the_supported_values() {
    let mut grant = example("20-grant-orders-reader.yaml");
    grant["spec"]["deletionPolicy"] = json!("Orphan");
    assert_rejected(&grant, "supported values: \"Delete\", \"Retain\"");
}

#[test]
fn roles_must_be_declared_before_they_are_allowed() {
    let mut target = example("10-target-cosmos-demo.yaml");
    target["spec"]["allowedRoles"] = json!(["reader", "writer"]);
    assert_rejected(&target, "every entry of allowedRoles must be");

    let mut target = example("10-target-cosmos-demo.yaml");
    target["spec"]["cosmos"]["roles"] =
        json!({"reader": {"dataActions": ["Microsoft.DocumentDB/databaseAccounts/readMetadata"]}});
    assert_rejected(&target, "must not be 'reader' or 'contributor'");

    let mut target = example("10-target-cosmos-demo.yaml");
    target["spec"]["cosmos"]["roles"]["metadata-reader"]["dataActions"] =
        json!(["Microsoft.Storage/read"]);
    assert_rejected(
        &target,
        "must start with 'Microsoft.DocumentDB/databaseAccounts/'",
    );
}

#[test]
fn names_and_required_fields_are_checked() {
    let mut grant = example("20-grant-orders-reader.yaml");
    grant["spec"]["serviceAccountName"] = json!("Orders_API");
    assert_rejected(&grant, "must be a ServiceAccount name");

    let mut grant = example("20-grant-orders-reader.yaml");
    grant["spec"].as_object_mut().expect("spec").remove("role");
    assert_rejected(&grant, "spec.role: Required value");

    let mut grant = example("20-grant-orders-reader.yaml");
    grant["spec"]["database"] = json!("a/b");
    assert_rejected(&grant, "a database name must not contain");
}

#[test]
fn deletion_policy_defaults_to_delete() {
    let grant: dbgrant::api::DatabaseAccessGrant =
        serde_json::from_value(example("20-grant-orders-reader.yaml")).expect("typed");
    assert_eq!(
        grant.spec.deletion_policy,
        dbgrant::api::DeletionPolicy::Delete
    );
    let schema = schema_of("DatabaseAccessGrant");
    assert_eq!(
        schema["properties"]["spec"]["properties"]["deletionPolicy"]["default"],
        "Delete"
    );
}

fn postgres_target() -> Value {
    json!({
        "apiVersion": "dbgrant.io/v1alpha1",
        "kind": "DatabaseTarget",
        "metadata": {"name": "pg-demo"},
        "spec": {
            "postgres": {
                "server": "shop.postgres.database.azure.com",
                "adminRole": "dbgrant-operator",
                "database": "orders",
                "roles": {
                    "reader": {"memberOf": ["app_reader"]},
                    "contributor": {"schemas": [{"schema": "sales", "privileges": ["SELECT", "INSERT"]}]}
                }
            },
            "allowedNamespaces": {},
            "allowedRoles": ["reader", "contributor"]
        }
    })
}

#[test]
fn a_postgres_target_is_accepted_and_its_identifiers_are_bounded_in_bytes() {
    let errors = api_server_errors(&postgres_target());
    assert!(errors.is_empty(), "{errors:#?}");

    let mut target = postgres_target();
    // 32 two-byte characters: 32 characters but 64 bytes, which PostgreSQL would truncate.
    target["spec"]["postgres"]["roles"]["reader"]["memberOf"] = json!(["é".repeat(32)]);
    assert_rejected(&target, "role names are 1 to 63 bytes");

    let mut target = postgres_target();
    target["spec"]["postgres"]["roles"]["reader"]["memberOf"] = json!(["azure_pg_admin"]);
    assert_rejected(&target, "not reserved");

    let mut target = postgres_target();
    target["spec"]["postgres"]["database"] = json!("postgres");
    assert_rejected(&target, "not postgres, template0");

    let mut target = postgres_target();
    target["spec"]["allowedRoles"] = json!(["reader", "owner"]);
    assert_rejected(&target, "every entry of allowedRoles must be declared");

    let mut target = postgres_target();
    target["spec"]["cosmos"] = example("10-target-cosmos-demo.yaml")["spec"]["cosmos"].clone();
    assert_rejected(&target, "exactly one backend block must be set");

    let mut target = postgres_target();
    target["spec"]["postgres"]["roles"]["reader"] = json!({});
    assert_rejected(&target, "at least one role in memberOf or one schema");
}

fn sql_target(sql: Value, allowed_roles: Value) -> Value {
    let mut target = example("10-target-cosmos-demo.yaml");
    let spec = target["spec"].as_object_mut().expect("spec");
    spec.remove("cosmos");
    spec.insert("sql".into(), sql);
    spec.insert("allowedRoles".into(), allowed_roles);
    target
}

#[test]
fn sql_targets_are_checked_at_admission() {
    let ok = json!({"kind": "AzureSqlDatabase", "server": "shop.database.windows.net", "database": "orders",
        "roles": {"analyst": {"memberOf": ["app_reader"], "schemas": [{"schema": "sales", "permissions": ["SELECT", "VIEW DEFINITION"]}]}}});
    assert!(
        api_server_errors(&sql_target(
            ok.clone(),
            json!(["reader", "contributor", "analyst"])
        ))
        .is_empty()
    );
    assert_rejected(
        &sql_target(ok.clone(), json!(["auditor"])),
        "every entry of allowedRoles must be declared",
    );
    let mut ip = ok.clone();
    ip["server"] = json!("10.0.0.4");
    assert_rejected(&sql_target(ip, json!(["reader"])), "not an IP address");
    let mut master = ok.clone();
    master["database"] = json!("MASTER");
    assert_rejected(
        &sql_target(master, json!(["reader"])),
        "not master, tempdb, model or msdb",
    );
    let mut owner = ok.clone();
    owner["roles"]["analyst"]["memberOf"] = json!(["db_owner"]);
    assert_rejected(
        &sql_target(owner, json!(["analyst"])),
        "a role that escalates",
    );
    let mut builtin = ok.clone();
    builtin["roles"] = json!({"reader": {"memberOf": ["app_reader"]}});
    assert_rejected(
        &sql_target(builtin, json!(["reader"])),
        "must not be 'reader' or 'contributor'",
    );
    let mut kind = ok;
    kind["kind"] = json!("Oracle");
    assert!(!api_server_errors(&sql_target(kind, json!(["reader"]))).is_empty());
}
