//! Kubernetes' protobuf encoding, as far as the simulator reads it: kubectl and Helm send
//! built-in objects as protobuf in the `k8s\0` envelope (`kubectl create deployment`,
//! TokenRequest from `kubectl create token`, SelfSubjectAccessReview from `kubectl auth can-i`,
//! Helm's release Secrets). Every built-in kind the simulator serves is decoded by one generic
//! walker over the field tables of `schema`, into the JSON the handlers take; answers are always
//! JSON, which client-go decodes whatever it asked for.

mod schema;

use serde_json::{Value, json};

/// The envelope's magic prefix.
const MAGIC: &[u8] = b"k8s\0";

struct Reader<'a> {
    bytes: &'a [u8],
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.bytes.split_first()?;
            self.bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// The next `(field number, value)`; fixed-width fields are skipped over.
    fn next(&mut self) -> Option<(u64, Field<'a>)> {
        loop {
            if self.bytes.is_empty() {
                return None;
            }
            let key = self.varint()?;
            let (number, wire) = (key >> 3, key & 7);
            match wire {
                0 => return Some((number, Field::Varint(self.varint()?))),
                2 => {
                    let len = usize::try_from(self.varint()?).ok()?;
                    if len > self.bytes.len() {
                        return None;
                    }
                    let (value, rest) = self.bytes.split_at(len);
                    self.bytes = rest;
                    return Some((number, Field::Bytes(value)));
                }
                1 => self.bytes = self.bytes.get(8..)?,
                5 => self.bytes = self.bytes.get(4..)?,
                _ => return None,
            }
        }
    }
}

fn message(bytes: &[u8]) -> Reader<'_> {
    Reader { bytes }
}

/// The object inside the envelope (`runtime.Unknown.raw`).
fn unwrap_envelope(body: &[u8]) -> Option<&[u8]> {
    let mut reader = message(body.strip_prefix(MAGIC)?);
    while let Some((number, field)) = reader.next() {
        if let (2, Field::Bytes(raw)) = (number, field) {
            return Some(raw);
        }
    }
    None
}

/// A protobuf TokenRequest as its JSON form (spec.audiences, spec.expirationSeconds).
pub fn token_request(body: &[u8]) -> Option<Value> {
    let raw = unwrap_envelope(body)?;
    let mut request = message(raw);
    let mut audiences = Vec::new();
    let mut expiration = None;
    while let Some((number, field)) = request.next() {
        let (2, Field::Bytes(spec)) = (number, field) else {
            continue;
        };
        let mut spec = message(spec);
        while let Some((number, field)) = spec.next() {
            match (number, field) {
                (1, Field::Bytes(audience)) => {
                    audiences.push(String::from_utf8_lossy(audience).to_string())
                }
                (4, Field::Varint(seconds)) => expiration = Some(seconds),
                _ => {}
            }
        }
    }
    let mut spec = json!({"audiences": audiences});
    if let Some(seconds) = expiration {
        spec["expirationSeconds"] = json!(seconds);
    }
    Some(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}))
}

fn strings(bytes: &[u8], names: &[(u64, &str)]) -> Value {
    let mut object = json!({});
    let mut reader = message(bytes);
    while let Some((number, field)) = reader.next() {
        if let (Some((_, name)), Field::Bytes(value)) =
            (names.iter().find(|(n, _)| *n == number), field)
        {
            object[*name] = json!(String::from_utf8_lossy(value));
        }
    }
    object
}

/// A protobuf SelfSubjectAccessReview (what `kubectl auth can-i` sends) as its JSON form.
pub fn self_subject_access_review(body: &[u8]) -> Option<Value> {
    let raw = unwrap_envelope(body)?;
    let mut review = message(raw);
    let mut spec = json!({});
    while let Some((number, field)) = review.next() {
        let (2, Field::Bytes(bytes)) = (number, field) else {
            continue;
        };
        let mut reader = message(bytes);
        while let Some((number, field)) = reader.next() {
            match (number, field) {
                (1, Field::Bytes(attributes)) => {
                    spec["resourceAttributes"] = strings(
                        attributes,
                        &[
                            (1, "namespace"),
                            (2, "verb"),
                            (3, "group"),
                            (4, "version"),
                            (5, "resource"),
                            (6, "subresource"),
                            (7, "name"),
                        ],
                    );
                }
                (2, Field::Bytes(attributes)) => {
                    spec["nonResourceAttributes"] = strings(attributes, &[(1, "path"), (2, "verb")])
                }
                _ => {}
            }
        }
    }
    Some(
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": spec}),
    )
}

/// `map<string, T>` entries are messages of key (1) and value (2).
fn map_entry(bytes: &[u8]) -> (String, &[u8]) {
    let mut key = String::new();
    let mut value: &[u8] = &[];
    let mut reader = message(bytes);
    while let Some((number, field)) = reader.next() {
        match (number, field) {
            (1, Field::Bytes(k)) => key = String::from_utf8_lossy(k).into_owned(),
            (2, Field::Bytes(v)) => value = v,
            _ => {}
        }
    }
    (key, value)
}

fn text(bytes: &[u8]) -> Value {
    json!(String::from_utf8_lossy(bytes))
}

/// A protobuf built-in object as its JSON form; `None` for kinds without a field table (the
/// caller answers 415 as the API server does for types it cannot decode).
pub fn object(body: &[u8], group: &str, kind: &str) -> Option<Value> {
    let message_name = schema::kind_message(group, kind)?;
    let raw = unwrap_envelope(body)?;
    let mut object = decode(raw, message_name)?;
    object["kind"] = json!(kind);
    object["apiVersion"] = json!(if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    });
    Some(object)
}

/// Decode one message by its field table; `None` when the bytes are not well-formed.
fn decode(bytes: &[u8], message_name: &str) -> Option<Value> {
    use schema::Ty;
    let table = schema::fields(message_name);
    let mut out = serde_json::Map::new();
    let mut reader = message(bytes);
    while let Some((number, field)) = reader.next() {
        let Some(&(_, name, ty, repeated)) = table.iter().find(|f| f.0 == number) else {
            continue;
        };
        let value = match (ty, field) {
            // Go writes every non-pointer string, empty too, where JSON omits it (`omitempty`):
            // an empty string must read as absent, so defaults apply (a Secret's type).
            (Ty::Str, Field::Bytes([])) if !repeated => continue,
            (Ty::Str, Field::Bytes(v)) => text(v),
            (Ty::Bool, Field::Varint(v)) => json!(v != 0),
            // int32 and int64 alike: negative numbers are the two's complement of 64 bits.
            (Ty::Int, Field::Varint(v)) => json!(v.cast_signed()),
            // Packed repeated integers (proto3 style) hold several varints.
            (Ty::Int, Field::Bytes(v)) if repeated => {
                let mut packed = message(v);
                let list = out.entry(name).or_insert_with(|| json!([]));
                while !packed.bytes.is_empty() {
                    let n = packed.varint()?;
                    list.as_array_mut()?.push(json!(n.cast_signed()));
                }
                continue;
            }
            (Ty::Msg(inner), Field::Bytes(v)) => decode(v, inner)?,
            (Ty::Inline(inner), Field::Bytes(v)) => {
                if let Value::Object(fields) = decode(v, inner)? {
                    out.extend(fields);
                }
                continue;
            }
            (Ty::Quantity, Field::Bytes(v)) => quantity(v),
            (Ty::IntOrString, Field::Bytes(v)) => int_or_string(v)?,
            (Ty::Time, Field::Bytes(v)) => timestamp(v)?,
            (Ty::StrMap | Ty::BytesMap | Ty::QuantityMap, Field::Bytes(v)) => {
                let (key, entry) = map_entry(v);
                let entry = match ty {
                    Ty::StrMap => text(entry),
                    Ty::QuantityMap => quantity(entry),
                    _ => {
                        use base64::Engine as _;
                        json!(base64::engine::general_purpose::STANDARD.encode(entry))
                    }
                };
                let map = out.entry(name).or_insert_with(|| json!({}));
                map.as_object_mut()?.insert(key, entry);
                continue;
            }
            // A wire type the table does not expect: not this schema's message.
            _ => return None,
        };
        if repeated {
            out.entry(name)
                .or_insert_with(|| json!([]))
                .as_array_mut()?
                .push(value);
        } else {
            out.insert(name.to_string(), value);
        }
    }
    Some(Value::Object(out))
}

/// `resource.Quantity`: its string (field 1).
fn quantity(bytes: &[u8]) -> Value {
    strings(bytes, &[(1, "string")])["string"].clone()
}

/// `intstr.IntOrString`: type (1: 0 int, 1 string), intVal (2), strVal (3).
fn int_or_string(bytes: &[u8]) -> Option<Value> {
    let (mut is_string, mut int, mut string) = (false, 0u64, String::new());
    let mut reader = message(bytes);
    while let Some(field) = reader.next() {
        match field {
            (1, Field::Varint(t)) => is_string = t == 1,
            (2, Field::Varint(v)) => int = v,
            (3, Field::Bytes(v)) => string = String::from_utf8_lossy(v).into_owned(),
            _ => {}
        }
    }
    Some(if is_string {
        json!(string)
    } else {
        json!(int.cast_signed())
    })
}

/// `metav1.Time`/`MicroTime`: seconds (1) and nanos (2) since the epoch, as RFC 3339.
fn timestamp(bytes: &[u8]) -> Option<Value> {
    let (mut seconds, mut nanos) = (0i64, 0i32);
    let mut reader = message(bytes);
    while let Some(field) = reader.next() {
        match field {
            (1, Field::Varint(v)) => seconds = v.cast_signed(),
            (2, Field::Varint(v)) => nanos = i32::try_from(v).ok()?,
            _ => {}
        }
    }
    let at = k8s_openapi::jiff::Timestamp::new(seconds, nanos).ok()?;
    Some(json!(at.to_string()))
}

/// Protobuf DeleteOptions (what client-go sends with a delete) as JSON: the propagation
/// policy and the preconditions.
pub fn delete_options(body: &[u8]) -> Option<Value> {
    let raw = unwrap_envelope(body)?;
    let mut options = json!({"kind": "DeleteOptions", "apiVersion": "v1"});
    let mut reader = message(raw);
    while let Some((number, field)) = reader.next() {
        match (number, field) {
            (1, Field::Varint(v)) => options["gracePeriodSeconds"] = json!(v),
            (2, Field::Bytes(v)) => {
                options["preconditions"] = strings(v, &[(1, "uid"), (2, "resourceVersion")]);
            }
            (3, Field::Varint(v)) => options["orphanDependents"] = json!(v != 0),
            (4, Field::Bytes(v)) => options["propagationPolicy"] = text(v),
            _ => {}
        }
    }
    Some(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2, u8::try_from(bytes.len()).unwrap()];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn a_token_request_envelope_decodes_to_its_spec() {
        let mut spec = field(1, b"api://AzureADTokenExchange");
        spec.extend([4 << 3, 0xd8, 0x04]); // expirationSeconds = 600
        let request = field(2, &spec);
        let mut body = MAGIC.to_vec();
        body.extend(field(1, &field(1, b"authentication.k8s.io/v1")));
        body.extend(field(2, &request));
        let decoded = token_request(&body).unwrap();
        assert_eq!(
            decoded["spec"]["audiences"],
            json!(["api://AzureADTokenExchange"])
        );
        assert_eq!(decoded["spec"]["expirationSeconds"], 600);
        assert!(token_request(b"{}").is_none(), "JSON is not an envelope");
    }

    #[test]
    fn a_secret_envelope_decodes_to_its_json_form() {
        let entry = |k: &[u8], v: &[u8]| {
            let mut e = field(1, k);
            e.extend(field(2, v));
            e
        };
        let mut meta = field(1, b"sh.helm.release.v1.demo.v1");
        meta.extend(field(11, &entry(b"owner", b"helm")));
        meta.extend(field(11, &entry(b"status", b"deployed")));
        let mut secret = field(1, &meta);
        secret.extend(field(2, &entry(b"release", b"\x01\x02")));
        secret.extend(field(3, b"helm.sh/release.v1"));
        let mut body = MAGIC.to_vec();
        body.extend(field(1, &field(2, b"Secret")));
        body.extend(field(2, &secret));
        let decoded = object(&body, "", "Secret").unwrap();
        assert_eq!(decoded["metadata"]["name"], "sh.helm.release.v1.demo.v1");
        assert_eq!(
            decoded["metadata"]["labels"],
            json!({"owner": "helm", "status": "deployed"})
        );
        assert_eq!(decoded["data"]["release"], "AQI=");
        assert_eq!(decoded["type"], "helm.sh/release.v1");
        assert!(
            object(&body, "apps", "DaemonSet").is_none(),
            "no field table, no decoding"
        );
    }
}
