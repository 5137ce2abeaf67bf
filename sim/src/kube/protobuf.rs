//! The little of Kubernetes' protobuf encoding the simulator reads: kubectl sends some request
//! bodies (TokenRequest from `kubectl create token`) as protobuf in the `k8s\0` envelope. Only
//! those are decoded, into the JSON the handlers take; answers are always JSON.

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
}
