//! TDS on the wire, the server's side, written from MS-TDS for the stand-in: packets in and
//! out, PRELOGIN, LOGIN7 with its FEDAUTH feature extension, SQL batches and RPC requests
//! (with their typed parameters) in; the tokens a SQL Server answers with out. Only what
//! dbgrant's client and the external clients of the tests send is understood; anything else
//! is an error, never a guess.

use anyhow::{Context as _, bail, ensure};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use uuid::Uuid;

/// Packet types (MS-TDS 2.2.3.1.1).
pub const SQL_BATCH: u8 = 1;
pub const RPC: u8 = 3;
pub const REPLY: u8 = 4;
pub const ATTENTION: u8 = 6;
pub const TRANSACTION_MANAGER: u8 = 14;
pub const LOGIN7: u8 = 16;
pub const PRELOGIN: u8 = 18;

/// The largest message the stand-in accepts (a login with a token is a few KB).
const MAX_MESSAGE: usize = 4 << 20;

/// A whole message: the packets up to the one marked end-of-message, headers removed.
pub struct Message {
    pub kind: u8,
    pub body: Vec<u8>,
}

/// Read one message; `None` at a clean end of stream between messages.
pub async fn read_message<S: AsyncRead + Unpin>(stream: &mut S) -> anyhow::Result<Option<Message>> {
    let mut body = Vec::new();
    let mut kind = None;
    loop {
        let mut header = [0u8; 8];
        match stream.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && kind.is_none() => {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
        let length = u16::from_be_bytes([header[2], header[3]]) as usize;
        ensure!(
            length >= 8,
            "packet length {length} is shorter than its header"
        );
        let start = body.len();
        body.resize(start + length - 8, 0);
        stream.read_exact(&mut body[start..]).await?;
        ensure!(body.len() <= MAX_MESSAGE, "message too large");
        kind.get_or_insert(header[0]);
        if header[1] & 0x01 != 0 {
            return Ok(Some(Message {
                kind: kind.unwrap_or(header[0]),
                body,
            }));
        }
    }
}

/// Write `body` as packets of at most `packet_size` bytes, the last marked end-of-message.
pub async fn write_message<S: AsyncWrite + Unpin>(
    stream: &mut S,
    kind: u8,
    body: &[u8],
    packet_size: usize,
) -> anyhow::Result<()> {
    let room = packet_size.max(512) - 8;
    let chunks: Vec<&[u8]> = if body.is_empty() {
        vec![&[]]
    } else {
        body.chunks(room).collect()
    };
    let mut out = Vec::with_capacity(body.len() + 8 * chunks.len());
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        out.push(kind);
        out.push(u8::from(last));
        out.extend_from_slice(&((chunk.len() + 8) as u16).to_be_bytes());
        // SPID 0x0033 (51, a user session's), packet id counting from 1, window 0.
        out.extend_from_slice(&[0x00, 0x33, (i + 1) as u8, 0x00]);
        out.extend_from_slice(chunk);
    }
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok(())
}

/// PRELOGIN option tokens (MS-TDS 2.2.6.5).
const PL_VERSION: u8 = 0;
const PL_ENCRYPTION: u8 = 1;
const PL_INSTOPT: u8 = 2;
const PL_MARS: u8 = 4;
const PL_FEDAUTHREQUIRED: u8 = 6;

/// `ENCRYPT_NOT_SUP`: what a client tunnelling TDS inside TLS it made itself (TDS 8 strict)
/// may send, as tiberius does inside dbgrant's tunnel.
pub const ENCRYPT_NOT_SUP: u8 = 0x02;

/// What a client's PRELOGIN asked for.
#[derive(Debug, Default)]
pub struct Prelogin {
    pub encryption: Option<u8>,
    pub fed_auth_required: bool,
}

/// Parse a client's PRELOGIN.
pub fn parse_prelogin(body: &[u8]) -> anyhow::Result<Prelogin> {
    let mut out = Prelogin::default();
    let mut at = 0;
    loop {
        let token = *body
            .get(at)
            .context("PRELOGIN ends inside its option table")?;
        if token == 0xFF {
            return Ok(out);
        }
        let entry = body
            .get(at + 1..at + 5)
            .context("truncated PRELOGIN option")?;
        let offset = u16::from_be_bytes([entry[0], entry[1]]) as usize;
        let length = u16::from_be_bytes([entry[2], entry[3]]) as usize;
        let data = body
            .get(offset..offset + length)
            .context("PRELOGIN option points outside the message")?;
        match token {
            PL_ENCRYPTION => out.encryption = data.first().copied(),
            PL_FEDAUTHREQUIRED => out.fed_auth_required = data.first() == Some(&1),
            _ => {}
        }
        at += 5;
    }
}

/// The server's PRELOGIN answer: version 16.0, the encryption answer, the instance valid,
/// no MARS, and FEDAUTHREQUIRED echoed when the client sent it (so it echoes it in LOGIN7).
pub fn prelogin_reply(encryption: u8, fed_auth: bool) -> Vec<u8> {
    let mut options: Vec<(u8, Vec<u8>)> = vec![
        (PL_VERSION, vec![16, 0, 0x10, 0x7A, 0, 0]),
        (PL_ENCRYPTION, vec![encryption]),
        (PL_INSTOPT, vec![0]),
        (PL_MARS, vec![0]),
    ];
    if fed_auth {
        options.push((PL_FEDAUTHREQUIRED, vec![1]));
    }
    let mut table = Vec::new();
    let mut data = Vec::new();
    let mut offset = options.len() * 5 + 1;
    for (token, value) in &options {
        table.push(*token);
        table.extend_from_slice(&(offset as u16).to_be_bytes());
        table.extend_from_slice(&(value.len() as u16).to_be_bytes());
        offset += value.len();
        data.extend_from_slice(value);
    }
    table.push(0xFF);
    table.extend_from_slice(&data);
    table
}

/// What LOGIN7 carries that the stand-in looks at.
#[derive(Debug, Default)]
pub struct Login {
    pub packet_size: u32,
    pub database: String,
    pub app_name: String,
    /// The FEDAUTH extension's token (library SECURITYTOKEN), when one was sent.
    pub token: Option<String>,
    /// A SQL login's name (SQL authentication, which the stand-in refuses).
    pub user_name: String,
}

fn utf16(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

fn u16_at(body: &[u8], at: usize) -> anyhow::Result<usize> {
    let b = body.get(at..at + 2).context("LOGIN7 is truncated")?;
    Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
}

fn u32_at(body: &[u8], at: usize) -> anyhow::Result<usize> {
    let b = body.get(at..at + 4).context("LOGIN7 is truncated")?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Parse LOGIN7 (MS-TDS 2.2.6.4): the fixed part, the strings the stand-in needs, and the
/// feature extension block when fExtension is set.
pub fn parse_login(body: &[u8]) -> anyhow::Result<Login> {
    ensure!(body.len() >= 94, "LOGIN7 shorter than its fixed part");
    let string = |field: usize| -> anyhow::Result<String> {
        let offset = u16_at(body, field)?;
        let chars = u16_at(body, field + 2)?;
        let bytes = body
            .get(offset..offset + chars * 2)
            .context("a LOGIN7 string points outside the message")?;
        Ok(utf16(bytes))
    };
    let mut login = Login {
        packet_size: u32_at(body, 8)? as u32,
        user_name: string(40)?,
        app_name: string(48)?,
        database: string(68)?,
        token: None,
    };
    let option_flags_3 = body[27];
    if option_flags_3 & 0x10 != 0 {
        // ibExtension points at a DWORD: the offset of the FeatureExt block.
        let pointer = u16_at(body, 56)?;
        let mut at = u32_at(body, pointer)?;
        loop {
            let feature = *body.get(at).context("FeatureExt is not terminated")?;
            if feature == 0xFF {
                break;
            }
            let length = u32_at(body, at + 1)?;
            let data = body
                .get(at + 5..at + 5 + length)
                .context("a feature points outside the message")?;
            if feature == 0x02 {
                login.token = Some(parse_fed_auth(data)?);
            }
            at += 5 + length;
        }
    }
    Ok(login)
}

fn parse_fed_auth(data: &[u8]) -> anyhow::Result<String> {
    let options = *data.first().context("empty FEDAUTH feature")?;
    // bits 1..7: the library; 0x01 is SECURITYTOKEN (a token obtained by the client).
    if options >> 1 != 0x01 {
        bail!(
            "FEDAUTH library {:#x} is not SECURITYTOKEN (the stand-in takes access tokens only)",
            options >> 1
        );
    }
    let length = u32_at(data, 1)?;
    let token = data
        .get(5..5 + length)
        .context("the FEDAUTH token points outside the feature")?;
    Ok(utf16(token))
}

/// Skip ALL_HEADERS (required from TDS 7.2 in batches and RPCs): its first DWORD is its
/// own total length.
fn after_all_headers(body: &[u8]) -> anyhow::Result<&[u8]> {
    let total = u32_at(body, 0)?;
    ensure!(total >= 4, "ALL_HEADERS shorter than its length field");
    body.get(total..)
        .context("ALL_HEADERS longer than the message")
}

/// A SQL batch's text.
pub fn parse_batch(body: &[u8]) -> anyhow::Result<String> {
    Ok(utf16(after_all_headers(body)?))
}

/// A transaction manager request (MS-TDS 2.2.6.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionRequest {
    /// TM_BEGIN_XACT.
    Begin,
    /// TM_COMMIT_XACT.
    Commit,
    /// TM_ROLLBACK_XACT.
    Rollback,
    /// Anything else (DTC, promote, save points).
    Other(u16),
}

/// Parse a transaction manager request's type.
pub fn parse_transaction_request(body: &[u8]) -> anyhow::Result<TransactionRequest> {
    let rest = after_all_headers(body)?;
    let ty = u16_at(rest, 0)? as u16;
    Ok(match ty {
        5 => TransactionRequest::Begin,
        7 => TransactionRequest::Commit,
        8 => TransactionRequest::Rollback,
        other => TransactionRequest::Other(other),
    })
}

/// A parameter value as the stand-in understands it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Guid(Uuid),
    Binary(Vec<u8>),
}

/// One RPC parameter.
#[derive(Clone, Debug)]
pub struct Param {
    /// `@P1`, ...; empty for positional ones.
    pub name: String,
    pub value: Value,
}

/// An RPC request: the procedure (a well-known id, or a name) and its parameters.
#[derive(Debug)]
pub struct Rpc {
    pub proc_id: Option<u16>,
    pub proc_name: String,
    pub params: Vec<Param>,
}

/// `sp_executesql`'s well-known procedure id.
pub const SP_EXECUTESQL: u16 = 10;

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> anyhow::Result<&'a [u8]> {
        let out = self
            .data
            .get(self.at..self.at + n)
            .context("RPC request is truncated")?;
        self.at += n;
        Ok(out)
    }
    fn u8(&mut self) -> anyhow::Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> anyhow::Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> anyhow::Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
}

/// Parse an RPC request (MS-TDS 2.2.6.6), one call (no batched RPCs).
pub fn parse_rpc(body: &[u8]) -> anyhow::Result<Rpc> {
    let mut r = Reader {
        data: after_all_headers(body)?,
        at: 0,
    };
    let name_len = r.u16()?;
    let (proc_id, proc_name) = if name_len == 0xFFFF {
        (Some(r.u16()?), String::new())
    } else {
        (None, utf16(r.take(name_len as usize * 2)?))
    };
    let _options = r.u16()?;
    let mut params = Vec::new();
    while !r.done() {
        let name_chars = r.u8()? as usize;
        let name = utf16(r.take(name_chars * 2)?);
        let _status = r.u8()?;
        let value = read_typed_value(&mut r)?;
        params.push(Param { name, value });
    }
    Ok(Rpc {
        proc_id,
        proc_name,
        params,
    })
}

/// TYPE_INFO then the value (MS-TDS 2.2.5.4-6), for the types clients bind parameters as.
fn read_typed_value(r: &mut Reader<'_>) -> anyhow::Result<Value> {
    let ty = r.u8()?;
    let int = |bytes: &[u8]| -> i64 {
        let mut full = [0u8; 8];
        full[..bytes.len()].copy_from_slice(bytes);
        // Sign-extend from the value's own width.
        let shift = 64 - 8 * bytes.len() as u32;
        (i64::from_le_bytes(full) << shift) >> shift
    };
    match ty {
        // Fixed-length integers and bit: INT1, BIT, INT2, INT4, INT8.
        0x30 => Ok(Value::Int(r.u8()? as i64)),
        0x32 => Ok(Value::Int(r.u8()? as i64)),
        0x34 => Ok(Value::Int(int(r.take(2)?))),
        0x38 => Ok(Value::Int(int(r.take(4)?))),
        0x7F => Ok(Value::Int(int(r.take(8)?))),
        // INTN, BITN: a max length, then a length-prefixed value.
        0x26 | 0x68 => {
            let _max = r.u8()?;
            let len = r.u8()? as usize;
            if len == 0 {
                return Ok(Value::Null);
            }
            let bytes = r.take(len)?;
            Ok(Value::Int(if ty == 0x26 {
                int(bytes)
            } else {
                bytes[0] as i64
            }))
        }
        // GUID: mixed-endian on the wire (the first three fields little-endian).
        0x24 => {
            let _max = r.u8()?;
            match r.u8()? {
                0 => Ok(Value::Null),
                16 => {
                    let b: [u8; 16] = r.take(16)?.try_into()?;
                    Ok(Value::Guid(Uuid::from_bytes_le(b)))
                }
                other => bail!("a GUID of {other} bytes"),
            }
        }
        // NVARCHAR, NCHAR, BIGVARCHAR, BIGCHAR (collated), BIGVARBINARY, BIGBINARY.
        0xE7 | 0xEF | 0xA7 | 0xAF | 0xA5 | 0xAD => {
            let max = r.u16()?;
            if matches!(ty, 0xE7 | 0xEF | 0xA7 | 0xAF) {
                r.take(5)?;
            }
            let bytes = if max == 0xFFFF {
                read_plp(r)?
            } else {
                match r.u16()? {
                    0xFFFF => None,
                    len => Some(r.take(len as usize)?.to_vec()),
                }
            };
            Ok(match bytes {
                None => Value::Null,
                Some(b) if matches!(ty, 0xE7 | 0xEF) => Value::Text(utf16(&b)),
                Some(b) if matches!(ty, 0xA7 | 0xAF) => {
                    Value::Text(String::from_utf8_lossy(&b).into_owned())
                }
                Some(b) => Value::Binary(b),
            })
        }
        other => bail!("parameter type {other:#04x} is not one the SQL stand-in understands"),
    }
}

/// A partially length-prefixed value: total length (or unknown), chunks, a zero terminator.
fn read_plp(r: &mut Reader<'_>) -> anyhow::Result<Option<Vec<u8>>> {
    let total = u64::from_le_bytes(r.take(8)?.try_into()?);
    if total == u64::MAX {
        return Ok(None);
    }
    let mut out = Vec::new();
    loop {
        let chunk = r.u32()? as usize;
        if chunk == 0 {
            return Ok(Some(out));
        }
        out.extend_from_slice(r.take(chunk)?);
        ensure!(out.len() <= MAX_MESSAGE, "PLP value too large");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prelogin_replies_parse_back() {
        let reply = prelogin_reply(ENCRYPT_NOT_SUP, true);
        let parsed = parse_prelogin(&reply).unwrap();
        assert_eq!(parsed.encryption, Some(ENCRYPT_NOT_SUP));
        assert!(parsed.fed_auth_required);
        assert!(
            !parse_prelogin(&prelogin_reply(0x01, false))
                .unwrap()
                .fed_auth_required
        );
    }

    #[test]
    fn truncated_or_pointing_outside_messages_are_errors_not_panics() {
        assert!(parse_prelogin(&[0x00, 0x00]).is_err());
        assert!(parse_prelogin(&[0x01, 0x00, 0x40, 0x00, 0x01, 0xFF]).is_err());
        assert!(parse_login(&[0u8; 40]).is_err());
        assert!(parse_rpc(&[4, 0, 0, 0, 0xFF]).is_err());
        let mut login = vec![0u8; 94];
        login[27] = 0x10; // fExtension, with an extension pointer to nowhere
        login[56] = 200;
        assert!(parse_login(&login).is_err());
    }
}
