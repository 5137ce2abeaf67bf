//! The tokens a SQL Server answers with (MS-TDS 2.2.7), as the stand-in writes them:
//! sign-in (ENVCHANGE, INFO, LOGINACK, FEATUREEXTACK), result sets (COLMETADATA, ROW),
//! errors, and the DONE family.

use uuid::Uuid;

fn b_varchar(out: &mut Vec<u8>, s: &str) {
    let units: Vec<u16> = s.encode_utf16().take(255).collect();
    out.push(units.len() as u8);
    for u in units {
        out.extend_from_slice(&u.to_le_bytes());
    }
}

fn us_varchar(out: &mut Vec<u8>, s: &str) {
    let units: Vec<u16> = s.encode_utf16().take(65_535).collect();
    out.extend_from_slice(&(units.len() as u16).to_le_bytes());
    for u in units {
        out.extend_from_slice(&u.to_le_bytes());
    }
}

/// The collation the stand-in's databases have: SQL_Latin1_General_CP1_CI_AS.
const COLLATION: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];

/// A token stream under construction.
#[derive(Default)]
pub struct Tokens(pub Vec<u8>);

/// DONE status bits.
pub const DONE_MORE: u16 = 0x01;
pub const DONE_ERROR: u16 = 0x02;

/// A result set's column types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    /// `nvarchar(4000)`.
    Text,
    /// `int` (as INTN).
    Int,
    /// `uniqueidentifier`.
    Guid,
}

/// A cell of a result row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    Null,
    Text(String),
    Int(i32),
    Guid(Uuid),
}

impl Tokens {
    fn env_change(&mut self, ty: u8, new: &[u8], old: &[u8]) {
        let mut body = vec![ty];
        body.extend_from_slice(new);
        body.extend_from_slice(old);
        self.0.push(0xE3);
        self.0.extend_from_slice(&(body.len() as u16).to_le_bytes());
        self.0.extend_from_slice(&body);
    }

    fn env_change_text(&mut self, ty: u8, new: &str, old: &str) {
        let (mut n, mut o) = (Vec::new(), Vec::new());
        b_varchar(&mut n, new);
        b_varchar(&mut o, old);
        self.env_change(ty, &n, &o);
    }

    /// ENVCHANGE database, language and collation, as a sign-in into `database` gives.
    pub fn signed_in(&mut self, database: &str, packet_size: u32) {
        self.env_change_text(1, database, "master");
        self.info(
            5701,
            2,
            0,
            &format!("Changed database context to '{database}'."),
        );
        let mut collation = vec![COLLATION.len() as u8];
        collation.extend_from_slice(&COLLATION);
        self.env_change(7, &collation, &[0]);
        self.env_change_text(2, "us_english", "");
        self.info(5703, 1, 0, "Changed language setting to us_english.");
        // LOGINACK: SQL interface, TDS 7.4, the program name and version 16.0.4250.
        let mut ack = vec![1, 0x74, 0x00, 0x00, 0x04];
        b_varchar(&mut ack, "Microsoft SQL Server");
        ack.extend_from_slice(&[16, 0, 0x10, 0x7A]);
        self.0.push(0xAD);
        self.0.extend_from_slice(&(ack.len() as u16).to_le_bytes());
        self.0.extend_from_slice(&ack);
        let size = packet_size.to_string();
        self.env_change_text(4, &size, &size);
    }

    /// ENVCHANGE: a transaction began, with this descriptor.
    pub fn transaction_began(&mut self, descriptor: u64) {
        let mut new = vec![8];
        new.extend_from_slice(&descriptor.to_le_bytes());
        self.env_change(8, &new, &[0]);
    }

    /// ENVCHANGE: the transaction with this descriptor was committed or rolled back.
    pub fn transaction_ended(&mut self, descriptor: u64, committed: bool) {
        let mut old = vec![8];
        old.extend_from_slice(&descriptor.to_le_bytes());
        self.env_change(if committed { 9 } else { 10 }, &[0], &old);
    }

    /// ENVCHANGE routing (type 20): reconnect to `host:port` over TCP.
    pub fn routing(&mut self, host: &str, port: u16) {
        let mut value = vec![0];
        value.extend_from_slice(&port.to_le_bytes());
        us_varchar(&mut value, host);
        let mut new = (value.len() as u16).to_le_bytes().to_vec();
        new.extend_from_slice(&value);
        self.env_change(20, &new, &[0, 0]);
    }

    /// FEATUREEXTACK acknowledging FEDAUTH (no nonce was offered, so no data).
    pub fn fed_auth_ack(&mut self) {
        self.0.extend_from_slice(&[0xAE, 0x02, 0, 0, 0, 0, 0xFF]);
    }

    fn message(&mut self, token: u8, number: u32, state: u8, class: u8, text: &str) {
        let mut body = Vec::new();
        body.extend_from_slice(&number.to_le_bytes());
        body.push(state);
        body.push(class);
        us_varchar(&mut body, text);
        b_varchar(&mut body, "dbgrant-sql-stand-in");
        b_varchar(&mut body, "");
        body.extend_from_slice(&1u32.to_le_bytes());
        self.0.push(token);
        self.0.extend_from_slice(&(body.len() as u16).to_le_bytes());
        self.0.extend_from_slice(&body);
    }

    /// An ERROR token.
    pub fn error(&mut self, number: u32, state: u8, class: u8, text: &str) {
        self.message(0xAA, number, state, class, text);
    }

    /// An INFO token.
    pub fn info(&mut self, number: u32, state: u8, class: u8, text: &str) {
        self.message(0xAB, number, state, class, text);
    }

    /// COLMETADATA.
    pub fn columns(&mut self, columns: &[(&str, Column)]) {
        self.0.push(0x81);
        self.0
            .extend_from_slice(&(columns.len() as u16).to_le_bytes());
        for (name, column) in columns {
            // UserType 0; flags: nullable.
            self.0.extend_from_slice(&[0, 0, 0, 0, 0x01, 0x00]);
            match column {
                Column::Text => {
                    self.0.push(0xE7);
                    self.0.extend_from_slice(&8000u16.to_le_bytes());
                    self.0.extend_from_slice(&COLLATION);
                }
                Column::Int => self.0.extend_from_slice(&[0x26, 4]),
                Column::Guid => self.0.extend_from_slice(&[0x24, 16]),
            }
            b_varchar(&mut self.0, name);
        }
    }

    /// ROW: each cell in its column's form (a NULL text is 0xFFFF, a NULL INTN or GUID a zero
    /// length).
    pub fn row(&mut self, columns: &[(&str, Column)], cells: &[Cell]) {
        self.0.push(0xD1);
        for ((_, column), cell) in columns.iter().zip(cells) {
            match (cell, column) {
                (Cell::Null, Column::Text) => self.0.extend_from_slice(&[0xFF, 0xFF]),
                (Cell::Null, _) => self.0.push(0),
                (Cell::Text(s), _) => {
                    let units: Vec<u16> = s.encode_utf16().take(4000).collect();
                    self.0
                        .extend_from_slice(&((units.len() * 2) as u16).to_le_bytes());
                    for u in units {
                        self.0.extend_from_slice(&u.to_le_bytes());
                    }
                }
                (Cell::Int(i), _) => {
                    self.0.push(4);
                    self.0.extend_from_slice(&i.to_le_bytes());
                }
                (Cell::Guid(g), _) => {
                    self.0.push(16);
                    self.0.extend_from_slice(&g.to_bytes_le());
                }
            }
        }
    }

    fn done_token(&mut self, token: u8, status: u16, rows: Option<u64>) {
        self.0.push(token);
        let status = status | if rows.is_some() { 0x10 } else { 0 };
        self.0.extend_from_slice(&status.to_le_bytes());
        // CurCmd: SELECT (0xC1); the client does not look at it.
        self.0.extend_from_slice(&0xC1u16.to_le_bytes());
        self.0
            .extend_from_slice(&rows.unwrap_or_default().to_le_bytes());
    }

    /// DONE.
    pub fn done(&mut self, status: u16) {
        self.done_token(0xFD, status, None);
    }

    /// DONEINPROC (a statement inside a procedure, such as sp_executesql, ended).
    pub fn done_in_proc(&mut self, status: u16) {
        self.done_token(0xFF, status, None);
    }

    /// RETURNSTATUS then DONEPROC: the procedure ended.
    pub fn done_proc(&mut self, return_status: i32, status: u16) {
        self.0.push(0x79);
        self.0.extend_from_slice(&return_status.to_le_bytes());
        self.done_token(0xFE, status, None);
    }
}
