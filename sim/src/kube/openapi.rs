//! OpenAPI documents for kubectl (`explain`, client-side apply, field validation):
//! `/openapi/v3` (JSON) and `/openapi/v2` (protobuf and JSON).

use serde_json::Value;

use super::resources::ServedResource;

/// `GET /openapi/v3`: the index of group-version documents.
pub fn v3_index(resources: &[ServedResource]) -> Value {
    let _ = resources;
    Value::Null
}

/// `GET /openapi/v3/{api|apis/group}/{version}`: one group version's document; `None` when
/// nothing is served there. `group` is `""` for the core group.
pub fn v3_group_version(resources: &[ServedResource], group: &str, version: &str) -> Option<Value> {
    let _ = (resources, group, version);
    None
}

/// `GET /openapi/v2` with `Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`.
pub fn v2_protobuf(resources: &[ServedResource]) -> Vec<u8> {
    let _ = resources;
    Vec::new()
}

/// `GET /openapi/v2` as JSON.
pub fn v2_json(resources: &[ServedResource]) -> Value {
    let _ = resources;
    Value::Null
}
