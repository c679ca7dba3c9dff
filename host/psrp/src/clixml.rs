//! CLIXML (MS-PSRP 2.2.5): PowerShell's serialization of objects, as a value model, a writer that
//! appends straight to a `String` (no tree is built, so a server can stream objects fast), and a
//! reader that resolves `RefId`/`TNRef` references.
//!
//! Strings and property names escape what XML cannot carry as `_xHHHH_` (a UTF-16 code unit in
//! hex): control characters (newlines included, as PowerShell writes them), unpaired or paired
//! surrogates (each half), U+FFFE/U+FFFF, and an underscore that would otherwise start such a
//! sequence (`_x005F_`).

use std::collections::HashMap;
use std::fmt::Write as _;

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

use crate::guid::Guid;
use crate::xml::XmlError;

/// A deserialized value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    String(String),
    Bool(bool),
    I32(i32),
    I64(i64),
    U32(u32),
    U64(u64),
    Double(f64),
    /// `DT`, kept as its text (`2026-12-06T20:08:38.1234567Z`).
    DateTime(String),
    Guid(Guid),
    /// `Version`, kept as its text (`2.3`).
    Version(String),
    /// `C`: a UTF-16 code unit.
    Char(u16),
    /// `BA`: bytes (base64 in XML).
    Bytes(Vec<u8>),
    /// Any other primitive element (`TS`, `D`, `By`, `I16`, `URI`, `SBK`, `SS`, …), its tag and text.
    Other {
        tag: String,
        text: String,
    },
    Object(Box<Object>),
}

/// The kind of a collection inside an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `LST` (arrays and lists).
    List,
    /// `IE` (other enumerables).
    Enumerable,
    /// `STK`.
    Stack,
    /// `QUE`.
    Queue,
}

impl ListKind {
    fn tag(self) -> &'static str {
        match self {
            ListKind::List => "LST",
            ListKind::Enumerable => "IE",
            ListKind::Stack => "STK",
            ListKind::Queue => "QUE",
        }
    }
}

/// What an object holds besides properties.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Container {
    #[default]
    None,
    List(ListKind, Vec<Value>),
    /// `DCT`: key/value pairs in order.
    Dict(Vec<(Value, Value)>),
}

/// A complex object (`Obj`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object {
    /// `TN`, most derived first; empty when the object has none.
    pub type_names: Vec<String>,
    pub to_string: Option<String>,
    /// A primitive the object wraps: an enum's `I32`, a string with notes.
    pub base: Option<Value>,
    pub container: Container,
    /// `Props`: adapted properties.
    pub adapted: Vec<(String, Value)>,
    /// `MS`: extended (member set) properties.
    pub extended: Vec<(String, Value)>,
}

pub const ARRAY_TYPES: &[&str] = &["System.Object[]", "System.Array", "System.Object"];
pub const HASHTABLE_TYPES: &[&str] = &["System.Collections.Hashtable", "System.Object"];

impl Value {
    pub fn string(s: impl Into<String>) -> Self {
        Value::String(s.into())
    }

    /// An array of values (`System.Object[]`).
    pub fn array(items: Vec<Value>) -> Self {
        Value::Object(Box::new(Object {
            type_names: ARRAY_TYPES.iter().map(|s| (*s).to_owned()).collect(),
            container: Container::List(ListKind::List, items),
            ..Object::default()
        }))
    }

    /// A `Hashtable`.
    pub fn hashtable(entries: Vec<(Value, Value)>) -> Self {
        Value::Object(Box::new(Object {
            type_names: HASHTABLE_TYPES.iter().map(|s| (*s).to_owned()).collect(),
            container: Container::Dict(entries),
            ..Object::default()
        }))
    }

    /// An enum value: its type names (the enum's, then `System.Enum`, `System.ValueType`,
    /// `System.Object` are appended), its name and number.
    pub fn enumeration(type_name: &str, name: &str, value: i32) -> Self {
        Value::Object(Box::new(Object {
            type_names: [
                type_name,
                "System.Enum",
                "System.ValueType",
                "System.Object",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
            to_string: Some(name.to_owned()),
            base: Some(Value::I32(value)),
            ..Object::default()
        }))
    }

    /// An object with extended properties only (what PSRP's message bodies are).
    pub fn ms(props: Vec<(&str, Value)>) -> Self {
        Value::Object(Box::new(Object {
            extended: props.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ..Object::default()
        }))
    }

    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// A string, or the text of an object's `ToString`, or a primitive's text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) | Value::DateTime(s) | Value::Version(s) => Some(s),
            Value::Other { text, .. } => Some(text),
            Value::Object(o) => match &o.base {
                Some(Value::String(s)) => Some(s),
                _ => o.to_string.as_deref(),
            },
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            Value::Object(o) => o.base.as_ref().and_then(Value::as_bool),
            _ => None,
        }
    }

    /// Any integer that fits in an i64 (enums give their number).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::I32(n) => Some(i64::from(*n)),
            Value::I64(n) => Some(*n),
            Value::U32(n) => Some(i64::from(*n)),
            Value::U64(n) => i64::try_from(*n).ok(),
            Value::Object(o) => o.base.as_ref().and_then(Value::as_i64),
            _ => None,
        }
    }

    /// The items of a list-like object.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::Object(o) => match &o.container {
                Container::List(_, items) => Some(items),
                _ => None,
            },
            _ => None,
        }
    }

    /// The entries of a dictionary object.
    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Object(o) => match &o.container {
                Container::Dict(e) => Some(e),
                _ => None,
            },
            _ => None,
        }
    }

    /// A property (extended first, then adapted) of an object.
    pub fn prop(&self, name: &str) -> Option<&Value> {
        self.as_object().and_then(|o| o.prop(name))
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

impl Object {
    /// A property by name, ignoring case (extended members first, then adapted).
    pub fn prop(&self, name: &str) -> Option<&Value> {
        self.extended
            .iter()
            .chain(self.adapted.iter())
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Whether one of the type names is `name` (with or without `Deserialized.`).
    pub fn is_type(&self, name: &str) -> bool {
        self.type_names
            .iter()
            .any(|t| t == name || t.strip_prefix("Deserialized.") == Some(name))
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<i32> for Value {
    fn from(n: i32) -> Self {
        Value::I32(n)
    }
}

// ---------------------------------------------------------------------------------------------
// Escaping

fn needs_escape(c: char) -> bool {
    matches!(c, '\0'..='\u{1f}' | '\u{fffe}' | '\u{ffff}') || (c as u32) > 0xffff
}

/// Appends `s` escaped for CLIXML text or an attribute: `_xHHHH_` first, then XML entities.
pub fn encode_into(out: &mut String, s: &str) {
    // Fast path: nothing special at all.
    if !s
        .bytes()
        .any(|b| b < 0x20 || matches!(b, b'&' | b'<' | b'>' | b'"' | b'_' | 0xef | 0xf0..=0xf4))
    {
        out.push_str(s);
        return;
    }
    let bytes = s.as_bytes();
    for (i, c) in s.char_indices() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '_' if starts_escape(&bytes[i..]) => out.push_str("_x005F_"),
            c if needs_escape(c) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "_x{:04X}_", u);
                }
            }
            c => out.push(c),
        }
    }
}

/// Whether `b` begins with `_xHHHH_`.
fn starts_escape(b: &[u8]) -> bool {
    b.len() >= 7
        && b[0] == b'_'
        && (b[1] == b'x' || b[1] == b'X')
        && b[2..6].iter().all(u8::is_ascii_hexdigit)
        && b[6] == b'_'
}

/// Reverses `_xHHHH_` escapes (text already XML-unescaped). Surrogate pairs recombine; a lone
/// surrogate becomes U+FFFD.
pub fn decode(s: &str) -> String {
    if !s.contains("_x") && !s.contains("_X") {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut units: Vec<u16> = Vec::new();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let flush = |units: &mut Vec<u16>, out: &mut String| {
        out.extend(char::decode_utf16(units.drain(..)).map(|r| r.unwrap_or('\u{fffd}')));
    };
    while i < b.len() {
        if starts_escape(&b[i..]) {
            let hex = &s[i + 2..i + 6];
            units.push(u16::from_str_radix(hex, 16).expect("checked hex"));
            i += 7;
            continue;
        }
        flush(&mut units, &mut out);
        let c = s[i..].chars().next().expect("in bounds");
        out.push(c);
        i += c.len_utf8();
    }
    flush(&mut units, &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// Writer

/// Writes CLIXML into a `String`. `RefId`s are numbered from 0 per writer and repeated type
/// name lists become `TNRef`s, as PowerShell's serializer does within one message.
///
/// The streaming calls (`begin_object` … `end_object`) let a server write objects without
/// building [`Value`]s; [`Writer::value`] writes a whole value.
#[derive(Debug, Default)]
pub struct Writer {
    out: String,
    next_ref: u32,
    type_refs: HashMap<String, u32>,
    next_tn: u32,
    key: String,
    open: Vec<&'static str>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Writer {
            out: String::with_capacity(n),
            ..Self::default()
        }
    }

    /// Forgets references and output, keeping the allocations (one writer per message).
    pub fn reset(&mut self) {
        self.out.clear();
        self.next_ref = 0;
        self.type_refs.clear();
        self.next_tn = 0;
        self.open.clear();
    }

    pub fn as_str(&self) -> &str {
        &self.out
    }

    /// Bytes written so far: a mark for [`Writer::insert_to_string`].
    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Inserts `<ToString>text</ToString>` at `mark` (taken right after `begin_object` with no
    /// `to_string`), for a writer that learns an object's display text only from its properties.
    pub fn insert_to_string(&mut self, mark: usize, text: &str) {
        let mut s = String::with_capacity(text.len() + 21);
        s.push_str("<ToString>");
        encode_into(&mut s, text);
        s.push_str("</ToString>");
        self.out.insert_str(mark, &s);
    }

    /// The text written; the writer is reset.
    pub fn take(&mut self) -> String {
        let s = std::mem::take(&mut self.out);
        self.reset();
        s
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn open_tag(&mut self, tag: &str, name: Option<&str>) {
        self.out.push('<');
        self.out.push_str(tag);
        if let Some(n) = name {
            self.out.push_str(" N=\"");
            encode_into(&mut self.out, n);
            self.out.push('"');
        }
    }

    fn leaf(&mut self, tag: &str, name: Option<&str>, text: &str, escape: bool) {
        self.open_tag(tag, name);
        if text.is_empty() && tag != "S" {
            self.out.push_str(" />");
            return;
        }
        self.out.push('>');
        if escape {
            encode_into(&mut self.out, text);
        } else {
            self.out.push_str(text);
        }
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
    }

    pub fn nil(&mut self, name: Option<&str>) {
        self.open_tag("Nil", name);
        self.out.push_str(" />");
    }

    pub fn string(&mut self, name: Option<&str>, s: &str) {
        self.open_tag("S", name);
        self.out.push('>');
        encode_into(&mut self.out, s);
        self.out.push_str("</S>");
    }

    /// A string, or `Nil` when absent.
    pub fn opt_string(&mut self, name: Option<&str>, s: Option<&str>) {
        match s {
            Some(s) => self.string(name, s),
            None => self.nil(name),
        }
    }

    pub fn bool(&mut self, name: Option<&str>, b: bool) {
        self.leaf("B", name, if b { "true" } else { "false" }, false);
    }

    pub fn i32(&mut self, name: Option<&str>, n: i32) {
        self.open_tag("I32", name);
        let _ = write!(self.out, ">{n}</I32>");
    }

    pub fn i64(&mut self, name: Option<&str>, n: i64) {
        self.open_tag("I64", name);
        let _ = write!(self.out, ">{n}</I64>");
    }

    pub fn u32(&mut self, name: Option<&str>, n: u32) {
        self.open_tag("U32", name);
        let _ = write!(self.out, ">{n}</U32>");
    }

    pub fn u64(&mut self, name: Option<&str>, n: u64) {
        self.open_tag("U64", name);
        let _ = write!(self.out, ">{n}</U64>");
    }

    pub fn double(&mut self, name: Option<&str>, n: f64) {
        self.open_tag("Db", name);
        if n.is_finite() {
            let _ = write!(self.out, ">{n}</Db>");
        } else if n.is_nan() {
            self.out.push_str(">NaN</Db>");
        } else if n > 0.0 {
            self.out.push_str(">Infinity</Db>");
        } else {
            self.out.push_str(">-Infinity</Db>");
        }
    }

    /// A `DT` with its text as given (ISO 8601 with 7 fraction digits and an offset or `Z`).
    pub fn datetime(&mut self, name: Option<&str>, text: &str) {
        self.leaf("DT", name, text, true);
    }

    pub fn guid(&mut self, name: Option<&str>, g: &Guid) {
        self.open_tag("G", name);
        let _ = write!(self.out, ">{g}</G>");
    }

    pub fn version(&mut self, name: Option<&str>, text: &str) {
        self.leaf("Version", name, text, true);
    }

    pub fn char(&mut self, name: Option<&str>, c: u16) {
        self.open_tag("C", name);
        let _ = write!(self.out, ">{c}</C>");
    }

    pub fn bytes(&mut self, name: Option<&str>, b: &[u8]) {
        self.open_tag("BA", name);
        self.out.push('>');
        base64_into(&mut self.out, b);
        self.out.push_str("</BA>");
    }

    /// Opens `<Obj N=… RefId=…>` with its type names (a `TNRef` when this list was written
    /// before) and `ToString`. Close with [`Writer::end_object`].
    pub fn begin_object(
        &mut self,
        name: Option<&str>,
        type_names: &[&str],
        to_string: Option<&str>,
    ) {
        self.open_tag("Obj", name);
        let _ = write!(self.out, " RefId=\"{}\">", self.next_ref);
        self.next_ref += 1;
        if !type_names.is_empty() {
            self.key.clear();
            for t in type_names {
                self.key.push_str(t);
                self.key.push('\n');
            }
            if let Some(id) = self.type_refs.get(&self.key) {
                let _ = write!(self.out, "<TNRef RefId=\"{id}\" />");
            } else {
                let id = self.next_tn;
                self.next_tn += 1;
                self.type_refs.insert(self.key.clone(), id);
                let _ = write!(self.out, "<TN RefId=\"{id}\">");
                for t in type_names {
                    self.out.push_str("<T>");
                    encode_into(&mut self.out, t);
                    self.out.push_str("</T>");
                }
                self.out.push_str("</TN>");
            }
        }
        if let Some(s) = to_string {
            self.out.push_str("<ToString>");
            encode_into(&mut self.out, s);
            self.out.push_str("</ToString>");
        }
        self.open.push("Obj");
    }

    fn begin(&mut self, tag: &'static str) {
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push('>');
        self.open.push(tag);
    }

    /// Closes the innermost open element (`Props`, `MS`, `LST`, `DCT`, `En`, `Obj`).
    fn end(&mut self) {
        let tag = self.open.pop().expect("an element is open");
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
    }

    /// Adapted properties follow, until `end_props`.
    pub fn begin_props(&mut self) {
        self.begin("Props");
    }

    pub fn end_props(&mut self) {
        self.end();
    }

    /// Extended properties follow, until `end_ms`.
    pub fn begin_ms(&mut self) {
        self.begin("MS");
    }

    pub fn end_ms(&mut self) {
        self.end();
    }

    /// List items follow (unnamed values), until `end_list`.
    pub fn begin_list(&mut self) {
        self.begin("LST");
    }

    pub fn end_list(&mut self) {
        self.end();
    }

    /// Dictionary entries follow (`entry_key`/value pairs via `begin_entry`), until `end_dict`.
    pub fn begin_dict(&mut self) {
        self.begin("DCT");
    }

    pub fn end_dict(&mut self) {
        self.end();
    }

    /// One dictionary entry: write a value named `Key`, then one named `Value`, then `end_entry`.
    pub fn begin_entry(&mut self) {
        self.begin("En");
    }

    pub fn end_entry(&mut self) {
        self.end();
    }

    pub fn end_object(&mut self) {
        self.end();
    }

    /// A list of strings as an object of the given type names (e.g. Exchange's
    /// `MultiValuedProperty`), or an array when `type_names` is empty.
    pub fn string_list(&mut self, name: Option<&str>, type_names: &[&str], items: &[&str]) {
        self.begin_object(
            name,
            if type_names.is_empty() {
                ARRAY_TYPES
            } else {
                type_names
            },
            None,
        );
        self.begin_list();
        for s in items {
            self.string(None, s);
        }
        self.end_list();
        self.end_object();
    }

    /// An enum: `<Obj><TN>type, System.Enum, …</TN><ToString>name</ToString><I32>n</I32></Obj>`.
    pub fn enumeration(
        &mut self,
        name: Option<&str>,
        type_name: &str,
        value_name: &str,
        value: i32,
    ) {
        self.begin_object(
            name,
            &[
                type_name,
                "System.Enum",
                "System.ValueType",
                "System.Object",
            ],
            Some(value_name),
        );
        self.i32(None, value);
        self.end_object();
    }

    /// Any value.
    pub fn value(&mut self, name: Option<&str>, v: &Value) {
        match v {
            Value::Null => self.nil(name),
            Value::String(s) => self.string(name, s),
            Value::Bool(b) => self.bool(name, *b),
            Value::I32(n) => self.i32(name, *n),
            Value::I64(n) => self.i64(name, *n),
            Value::U32(n) => self.u32(name, *n),
            Value::U64(n) => self.u64(name, *n),
            Value::Double(n) => self.double(name, *n),
            Value::DateTime(s) => self.datetime(name, s),
            Value::Guid(g) => self.guid(name, g),
            Value::Version(s) => self.version(name, s),
            Value::Char(c) => self.char(name, *c),
            Value::Bytes(b) => self.bytes(name, b),
            Value::Other { tag, text } => {
                self.open_tag(tag, name);
                self.out.push('>');
                encode_into(&mut self.out, text);
                let _ = write!(self.out, "</{tag}>");
            }
            Value::Object(o) => self.object(name, o),
        }
    }

    fn object(&mut self, name: Option<&str>, o: &Object) {
        let tn: Vec<&str> = o.type_names.iter().map(String::as_str).collect();
        self.begin_object(name, &tn, o.to_string.as_deref());
        if let Some(b) = &o.base {
            self.value(None, b);
        }
        match &o.container {
            Container::None => {}
            Container::List(kind, items) => {
                self.begin(kind.tag());
                for i in items {
                    self.value(None, i);
                }
                self.end();
            }
            Container::Dict(entries) => {
                self.begin_dict();
                for (k, v) in entries {
                    self.begin("En");
                    self.value(Some("Key"), k);
                    self.value(Some("Value"), v);
                    self.end();
                }
                self.end_dict();
            }
        }
        if !o.adapted.is_empty() {
            self.begin_props();
            for (k, v) in &o.adapted {
                self.value(Some(k), v);
            }
            self.end_props();
        }
        if !o.extended.is_empty() {
            self.begin_ms();
            for (k, v) in &o.extended {
                self.value(Some(k), v);
            }
            self.end_ms();
        }
        self.end_object();
    }
}

/// Serializes one value (one message's data).
pub fn to_clixml(v: &Value) -> String {
    let mut w = Writer::new();
    w.value(None, v);
    w.finish()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (for `BA` and WS-Management streams).
///
/// Whole 48-byte blocks go through a stack buffer appended at once: a server encodes every byte
/// it streams, so this is on its hot path.
pub fn base64_into(out: &mut String, b: &[u8]) {
    out.reserve(b.len().div_ceil(3) * 4);
    let sextets = |n: u32| {
        [
            B64[(n >> 18) as usize & 63],
            B64[(n >> 12) as usize & 63],
            B64[(n >> 6) as usize & 63],
            B64[n as usize & 63],
        ]
    };
    let mut blocks = b.chunks_exact(48);
    let mut buf = [0u8; 64];
    for block in blocks.by_ref() {
        for (i, c) in block.chunks_exact(3).enumerate() {
            let n = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
            buf[i * 4..i * 4 + 4].copy_from_slice(&sextets(n));
        }
        out.push_str(std::str::from_utf8(&buf).expect("base64 is ASCII"));
    }
    for c in blocks.remainder().chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        let q = sextets(n);
        out.push(q[0] as char);
        out.push(q[1] as char);
        out.push(if c.len() > 1 { q[2] as char } else { '=' });
        out.push(if c.len() > 2 { q[3] as char } else { '=' });
    }
}

pub fn base64_encode(b: &[u8]) -> String {
    let mut s = String::new();
    base64_into(&mut s, b);
    s
}

/// Sextet of each base64 character; `INVALID` for everything else.
const INVALID: u8 = 0xff;
const DECODE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        t[B64[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// Standard base64; whitespace is ignored; padding optional.
///
/// Runs of four plain characters are decoded without branching per character: the client side
/// decodes every byte of every `Stream`, so this is on a client's hot path.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 4 * 3 + 3);
    let mut i = 0;
    while i + 4 <= b.len() {
        let (c0, c1, c2, c3) = (
            DECODE[b[i] as usize],
            DECODE[b[i + 1] as usize],
            DECODE[b[i + 2] as usize],
            DECODE[b[i + 3] as usize],
        );
        if (c0 | c1 | c2 | c3) & 0xc0 != 0 {
            break;
        }
        let n =
            (u32::from(c0) << 18) | (u32::from(c1) << 12) | (u32::from(c2) << 6) | u32::from(c3);
        out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
        i += 4;
    }
    // The rest: padding, whitespace, or a final partial group.
    let mut acc = 0u32;
    let mut bits = 0;
    let mut pad = 0;
    for &c in &b[i..] {
        let v = match c {
            b'=' => {
                pad += 1;
                continue;
            }
            b' ' | b'\n' | b'\r' | b'\t' => continue,
            c => DECODE[c as usize],
        };
        if v == INVALID || pad > 0 {
            return None;
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    (pad <= 2).then_some(out)
}

// ---------------------------------------------------------------------------------------------
// Reader

/// CLIXML that does not describe a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClixmlError {
    #[error(transparent)]
    Xml(#[from] XmlError),
    #[error("<{tag}> holds '{text}', which is not a valid {what}")]
    BadPrimitive {
        tag: String,
        text: String,
        what: &'static str,
    },
    #[error("<{0}> refers to RefId {1}, which was not defined before")]
    UnknownRef(&'static str, String),
    #[error("<{0}> is not a CLIXML value")]
    UnknownElement(String),
    #[error("<En> without a Key or Value")]
    BadEntry,
}

/// Deepest nesting of elements read. The reader recurses per value: the limit keeps a hostile
/// document from exhausting the stack (PowerShell's own objects nest a dozen or two deep).
const MAX_DEPTH: usize = 100;

/// The `RefId`s of one document. An object is remembered by where it starts in the text and
/// read again where a `Ref` names it: cloning each object's value as it was read made every
/// nesting level copy its whole subtree (a CREATE_PIPELINE's objects nest a dozen deep), and
/// `Ref`s are rare.
#[derive(Default)]
struct Refs {
    /// `RefId` → byte offset of the `Obj`'s start tag, once the object has ended.
    objects: HashMap<String, usize>,
    types: HashMap<String, Vec<String>>,
}

/// A CLIXML reader over quick-xml events, building [`Value`]s as it goes: no element tree.
/// A server parses every CREATE_PIPELINE this way, so per-element allocations matter.
struct Stream<'t> {
    text: &'t str,
    reader: Reader<&'t [u8]>,
    /// Where `reader`'s input starts in `text` (a `Ref` is read by a reader over a suffix).
    base: usize,
}

/// An element's start as the reader met it.
struct Open<'t> {
    start: BytesStart<'t>,
    /// Whether it was `<x/>`: no content, no end tag.
    empty: bool,
    /// Its byte offset in the document.
    at: usize,
}

fn local_name(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, l)| l)
}

impl<'t> Stream<'t> {
    fn new(text: &'t str, base: usize) -> Self {
        Stream {
            text,
            reader: Reader::from_reader(&text.as_bytes()[base..]),
            base,
        }
    }

    fn syntax(&self, e: impl std::fmt::Display) -> ClixmlError {
        ClixmlError::Xml(XmlError::Syntax {
            position: (self.base as u64) + self.reader.buffer_position(),
            message: e.to_string(),
        })
    }

    fn eof_error(&self) -> ClixmlError {
        self.syntax("the document ends inside an element")
    }

    /// The next element start, or `None` at the end tag of the element being read; text,
    /// comments and declarations between elements are skipped. The input's end is an error
    /// (the element is not closed), except before the root (`XmlError::Empty`).
    fn next_child(&mut self) -> Result<Option<Open<'t>>, ClixmlError> {
        loop {
            let at = self.base + self.reader.buffer_position() as usize;
            let event = self.reader.read_event().map_err(|e| self.syntax(e))?;
            return Ok(Some(match event {
                Event::Start(start) => Open {
                    start,
                    empty: false,
                    at,
                },
                Event::Empty(start) => Open {
                    start,
                    empty: true,
                    at,
                },
                Event::End(_) => return Ok(None),
                Event::Eof => return Err(self.eof_error()),
                _ => continue,
            }));
        }
    }

    /// An attribute by local name, unescaped.
    fn attr(&self, start: &BytesStart<'_>, name: &str) -> Result<Option<String>, ClixmlError> {
        for a in start.attributes() {
            let a = a.map_err(|e| self.syntax(e))?;
            let key = a.key.as_ref();
            if key.starts_with("xmlns") || local_name(key) != name {
                continue;
            }
            let v = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| self.syntax(e))?;
            return Ok(Some(v.into_owned()));
        }
        Ok(None)
    }

    /// The element's own text (its text nodes together, children skipped) up to its end tag.
    fn text(&mut self, open: &Open<'t>) -> Result<Cow<'t, str>, ClixmlError> {
        let mut text: Cow<'t, str> = Cow::Borrowed("");
        if open.empty {
            return Ok(text);
        }
        let mut depth = 0usize;
        loop {
            let event = self.reader.read_event().map_err(|e| self.syntax(e))?;
            let piece: Cow<'t, str> = match event {
                Event::Text(t) if depth == 0 => t.xml10_content(),
                Event::CData(t) if depth == 0 => t.xml10_content(),
                Event::GeneralRef(r) if depth == 0 => {
                    if let Some(c) = r.resolve_char_ref().map_err(|e| self.syntax(e))? {
                        Cow::Owned(c.to_string())
                    } else if let Some(s) = quick_xml::escape::resolve_predefined_entity(&r) {
                        Cow::Borrowed(s)
                    } else {
                        return Err(self.syntax(format!("unknown entity &{};", &*r)));
                    }
                }
                Event::Start(_) => {
                    depth += 1;
                    if depth >= MAX_DEPTH {
                        return Err(ClixmlError::Xml(XmlError::TooDeep(MAX_DEPTH)));
                    }
                    continue;
                }
                Event::End(_) if depth == 0 => return Ok(text),
                Event::End(_) => {
                    depth -= 1;
                    continue;
                }
                Event::Eof => return Err(self.eof_error()),
                _ => continue,
            };
            if text.is_empty() {
                text = piece;
            } else {
                text.to_mut().push_str(&piece);
            }
        }
    }

    /// Skips the rest of an element.
    fn skip(&mut self, open: &Open<'t>) -> Result<(), ClixmlError> {
        self.text(open).map(|_| ())
    }

    /// Reads the value element `open` (through its end tag).
    fn value(
        &mut self,
        open: Open<'t>,
        refs: &mut Refs,
        depth: usize,
    ) -> Result<Value, ClixmlError> {
        if depth >= MAX_DEPTH {
            return Err(ClixmlError::Xml(XmlError::TooDeep(MAX_DEPTH)));
        }
        let name = open.start.name();
        let tag = local_name(name.as_ref());
        // A primitive's text.
        let primitive = |s: &mut Self, open: &Open<'t>| s.text(open);
        let v = match tag {
            "Obj" => {
                return self
                    .object(open, refs, depth)
                    .map(|o| Value::Object(Box::new(o)));
            }
            "Ref" => {
                let id = self.attr(&open.start, "RefId")?.unwrap_or_default();
                self.skip(&open)?;
                let Some(&at) = refs.objects.get(&id) else {
                    return Err(ClixmlError::UnknownRef("Ref", id));
                };
                let mut again = Stream::new(self.text, at);
                let open = again.next_child()?.ok_or_else(|| again.eof_error())?;
                return again.value(open, refs, depth + 1);
            }
            "Nil" => {
                self.skip(&open)?;
                Value::Null
            }
            "S" => Value::String(decode(&primitive(self, &open)?)),
            "B" => {
                let t = primitive(self, &open)?;
                match t.trim() {
                    "true" | "True" => Value::Bool(true),
                    "false" | "False" => Value::Bool(false),
                    _ => return Err(bad("B", &t, "boolean")),
                }
            }
            "I32" => Value::I32(number("I32", &primitive(self, &open)?, "32-bit integer")?),
            "I64" => Value::I64(number("I64", &primitive(self, &open)?, "64-bit integer")?),
            "U32" => Value::U32(number(
                "U32",
                &primitive(self, &open)?,
                "unsigned 32-bit integer",
            )?),
            "U64" => Value::U64(number(
                "U64",
                &primitive(self, &open)?,
                "unsigned 64-bit integer",
            )?),
            "Db" => {
                let t = primitive(self, &open)?;
                Value::Double(match t.trim() {
                    "Infinity" => f64::INFINITY,
                    "-Infinity" => f64::NEG_INFINITY,
                    "NaN" => f64::NAN,
                    _ => number("Db", &t, "double")?,
                })
            }
            "DT" => Value::DateTime(primitive(self, &open)?.trim().to_owned()),
            "G" => {
                let t = primitive(self, &open)?;
                Value::Guid(t.trim().parse().map_err(|_| bad("G", &t, "GUID"))?)
            }
            "Version" => Value::Version(primitive(self, &open)?.trim().to_owned()),
            "C" => Value::Char(number("C", &primitive(self, &open)?, "UTF-16 code unit")?),
            "BA" => {
                let t = primitive(self, &open)?;
                Value::Bytes(base64_decode(&t).ok_or_else(|| bad("BA", &t, "base64 text"))?)
            }
            "SB" | "By" | "I16" | "U16" | "Sg" | "D" | "TS" | "URI" | "XD" | "SBK" | "SS"
            | "PR" => Value::Other {
                tag: tag.to_owned(),
                text: decode(&primitive(self, &open)?),
            },
            other => return Err(ClixmlError::UnknownElement(other.to_owned())),
        };
        Ok(v)
    }

    /// The children of a container element (`LST`, `Props`, …), each read with `each`.
    fn children(
        &mut self,
        open: &Open<'t>,
        mut each: impl FnMut(&mut Self, Open<'t>) -> Result<(), ClixmlError>,
    ) -> Result<(), ClixmlError> {
        if open.empty {
            return Ok(());
        }
        while let Some(child) = self.next_child()? {
            each(self, child)?;
        }
        Ok(())
    }

    fn object(
        &mut self,
        open: Open<'t>,
        refs: &mut Refs,
        depth: usize,
    ) -> Result<Object, ClixmlError> {
        let ref_id = self.attr(&open.start, "RefId")?;
        let mut o = Object::default();
        // Values inside sit two elements down (`Obj`, then `MS`/`LST`/…), as the limit counts.
        let d = depth + 2;
        self.children(&open, |s, c| {
            let name = c.start.name();
            match local_name(name.as_ref()) {
                "TN" => {
                    let mut names = Vec::new();
                    s.children(&c, |s, t| {
                        if local_name(t.start.name().as_ref()) == "T" {
                            names.push(decode(&s.text(&t)?));
                            Ok(())
                        } else {
                            s.skip(&t)
                        }
                    })?;
                    if let Some(id) = s.attr(&c.start, "RefId")? {
                        refs.types.insert(id, names.clone());
                    }
                    o.type_names = names;
                }
                "TNRef" => {
                    let id = s.attr(&c.start, "RefId")?.unwrap_or_default();
                    s.skip(&c)?;
                    o.type_names = refs
                        .types
                        .get(&id)
                        .cloned()
                        .ok_or(ClixmlError::UnknownRef("TNRef", id))?;
                }
                "ToString" => o.to_string = Some(decode(&s.text(&c)?)),
                "Props" => o.adapted = s.props(&c, refs, d)?,
                "MS" => o.extended = s.props(&c, refs, d)?,
                kind @ ("LST" | "IE" | "STK" | "QUE") => {
                    let kind = match kind {
                        "LST" => ListKind::List,
                        "IE" => ListKind::Enumerable,
                        "STK" => ListKind::Stack,
                        _ => ListKind::Queue,
                    };
                    let mut items = Vec::new();
                    s.children(&c, |s, i| {
                        items.push(s.value(i, refs, d)?);
                        Ok(())
                    })?;
                    o.container = Container::List(kind, items);
                }
                "DCT" => {
                    let mut entries = Vec::new();
                    s.children(&c, |s, en| {
                        if local_name(en.start.name().as_ref()) != "En" {
                            return s.skip(&en);
                        }
                        let (mut key, mut value) = (None, None);
                        s.children(&en, |s, kv| match s.attr(&kv.start, "N")?.as_deref() {
                            Some("Key") => {
                                key = Some(s.value(kv, refs, d)?);
                                Ok(())
                            }
                            Some("Value") => {
                                value = Some(s.value(kv, refs, d)?);
                                Ok(())
                            }
                            _ => s.skip(&kv),
                        })?;
                        entries.push((
                            key.ok_or(ClixmlError::BadEntry)?,
                            value.ok_or(ClixmlError::BadEntry)?,
                        ));
                        Ok(())
                    })?;
                    o.container = Container::Dict(entries);
                }
                _ => o.base = Some(s.value(c, refs, d)?),
            }
            Ok(())
        })?;
        if let Some(id) = ref_id {
            refs.objects.insert(id, open.at);
        }
        Ok(o)
    }

    fn props(
        &mut self,
        open: &Open<'t>,
        refs: &mut Refs,
        depth: usize,
    ) -> Result<Vec<(String, Value)>, ClixmlError> {
        let mut props = Vec::new();
        self.children(open, |s, c| {
            let name = decode(&s.attr(&c.start, "N")?.unwrap_or_default());
            props.push((name, s.value(c, refs, depth)?));
            Ok(())
        })?;
        Ok(props)
    }

    /// The document's root element.
    fn root(&mut self) -> Result<Open<'t>, ClixmlError> {
        loop {
            let event = self.reader.read_event().map_err(|e| self.syntax(e))?;
            return Ok(match event {
                Event::Start(start) => Open {
                    start,
                    empty: false,
                    at: self.base,
                },
                Event::Empty(start) => Open {
                    start,
                    empty: true,
                    at: self.base,
                },
                Event::Eof => return Err(ClixmlError::Xml(XmlError::Empty)),
                Event::End(_) => return Err(self.syntax("closing tag without an opening one")),
                _ => continue,
            });
        }
    }
}

/// Reads one value from CLIXML text (its root element; an `Objs` root gives the first value,
/// or `Null` when empty).
pub fn from_clixml(text: &str) -> Result<Value, ClixmlError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut s = Stream::new(text, 0);
    let mut refs = Refs::default();
    let root = s.root()?;
    if local_name(root.start.name().as_ref()) != "Objs" {
        return s.value(root, &mut refs, 0);
    }
    let mut first = None;
    // The rest is read too, so that a document broken after its first value is an error.
    s.children(&root, |s, c| {
        if first.is_none() {
            first = Some(s.value(c, &mut refs, 1)?);
            Ok(())
        } else {
            s.skip(&c)
        }
    })?;
    Ok(first.unwrap_or(Value::Null))
}

/// Reads every value of an `Objs` document (or the single root value).
pub fn from_clixml_all(text: &str) -> Result<Vec<Value>, ClixmlError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut s = Stream::new(text, 0);
    let mut refs = Refs::default();
    let root = s.root()?;
    if local_name(root.start.name().as_ref()) != "Objs" {
        return Ok(vec![s.value(root, &mut refs, 0)?]);
    }
    let mut all = Vec::new();
    s.children(&root, |s, c| {
        all.push(s.value(c, &mut refs, 1)?);
        Ok(())
    })?;
    Ok(all)
}

fn bad(tag: &str, text: &str, what: &'static str) -> ClixmlError {
    ClixmlError::BadPrimitive {
        tag: tag.to_owned(),
        text: text.to_owned(),
        what,
    }
}

fn number<T: std::str::FromStr>(
    tag: &str,
    text: &str,
    what: &'static str,
) -> Result<T, ClixmlError> {
    text.trim().parse::<T>().map_err(|_| bad(tag, text, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_as_the_spec_shows() {
        let mut s = String::new();
        encode_into(&mut s, "a\r\nb_x0041_c<&>\u{1F600}");
        assert_eq!(
            s,
            "a_x000D__x000A_b_x005F_x0041_c&lt;&amp;&gt;_xD83D__xDE00_"
        );
        assert_eq!(
            decode("a_x000D__x000A_b_x005F_x0041_c_xD83D__xDE00__xD800_"),
            "a\r\nb_x0041_c\u{1F600}\u{fffd}"
        );
        let tricky = "_x005F_ _x_ __x0041_ \u{0}\u{7} é";
        let mut w = Writer::new();
        w.string(None, tricky);
        assert_eq!(from_clixml(w.as_str()).unwrap(), Value::string(tricky));
    }

    #[test]
    fn every_value_kind_round_trips() {
        let g: Guid = "00112233-4455-6677-8899-aabbccddeeff".parse().unwrap();
        let v = Value::Object(Box::new(Object {
            type_names: vec![
                "Deserialized.My.Type".into(),
                "Deserialized.System.Object".into(),
            ],
            to_string: Some("me".into()),
            adapted: vec![
                ("S".into(), Value::string("x")),
                ("Nil".into(), Value::Null),
                ("B".into(), Value::Bool(true)),
                ("I32".into(), Value::I32(-5)),
                ("I64".into(), Value::I64(1 << 40)),
                ("U32".into(), Value::U32(7)),
                ("U64".into(), Value::U64(u64::MAX)),
                ("Db".into(), Value::Double(1.5)),
                (
                    "DT".into(),
                    Value::DateTime("2026-12-06T20:08:38.1234567Z".into()),
                ),
                ("G".into(), Value::Guid(g)),
                ("V".into(), Value::Version("2.3".into())),
                ("C".into(), Value::Char(65)),
                ("BA".into(), Value::Bytes(vec![0, 1, 2, 255])),
                (
                    "TS".into(),
                    Value::Other {
                        tag: "TS".into(),
                        text: "PT9.0269026S".into(),
                    },
                ),
                (
                    "L".into(),
                    Value::array(vec![Value::string("a"), Value::I32(1)]),
                ),
                (
                    "H".into(),
                    Value::hashtable(vec![(
                        Value::string("Add"),
                        Value::array(vec![Value::string("d1")]),
                    )]),
                ),
                (
                    "E".into(),
                    Value::enumeration("System.DayOfWeek", "Monday", 1),
                ),
            ],
            extended: vec![("N_x".into(), Value::string("y"))],
            ..Object::default()
        }));
        let text = to_clixml(&v);
        assert_eq!(from_clixml(&text).unwrap(), v, "{text}");
    }

    #[test]
    fn reads_refs_and_type_name_refs_from_powershell_output() {
        // Two objects of one type: the second names its types by TNRef, and a Ref repeats the first.
        let text = r#"<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04"><Obj RefId="0"><TN RefId="0"><T>System.Object[]</T><T>System.Array</T><T>System.Object</T></TN><LST><Obj RefId="1"><TN RefId="1"><T>Deserialized.X</T></TN><ToString>one</ToString><Props><S N="Name">one</S></Props></Obj><Obj RefId="2"><TNRef RefId="1" /><Props><S N="Name">two</S></Props></Obj><Ref RefId="1" /></LST></Obj></Objs>"#;
        let v = from_clixml(text).unwrap();
        let items = v.as_list().unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(
            items[1].as_object().unwrap().type_names,
            vec!["Deserialized.X"]
        );
        assert_eq!(items[1].prop("name").unwrap().as_str(), Some("two"));
        assert_eq!(items[2], items[0]);
        assert!(matches!(
            from_clixml(r#"<Obj RefId="0"><TNRef RefId="9" /></Obj>"#),
            Err(ClixmlError::UnknownRef("TNRef", _))
        ));
        assert!(matches!(
            from_clixml("<I32>x</I32>"),
            Err(ClixmlError::BadPrimitive { .. })
        ));
        assert!(matches!(
            from_clixml("<Foo/>"),
            Err(ClixmlError::UnknownElement(_))
        ));
    }

    #[test]
    fn broken_documents_are_errors_wherever_they_break() {
        for text in [
            "",
            "<Obj RefId=\"0\"><S>x</Obj>",
            "<Obj RefId=\"0\"><MS><S N=\"a\">x</S>",
            "<Objs><S>a</S><S>b</Objs>",
            "<S>a &bogus; b</S>",
        ] {
            assert!(from_clixml(text).is_err(), "{text}");
        }
        assert_eq!(from_clixml(""), Err(ClixmlError::Xml(XmlError::Empty)));
        let deep = "<Obj><LST>".repeat(200) + &"</LST></Obj>".repeat(200);
        assert_eq!(
            from_clixml(&deep),
            Err(ClixmlError::Xml(XmlError::TooDeep(MAX_DEPTH)))
        );
        let deepest = "<Obj><LST>".repeat(49) + "<Nil/>" + &"</LST></Obj>".repeat(49);
        assert!(from_clixml(&deepest).is_ok());
        // A primitive's own text only; an Objs root's first value, its second still read.
        assert_eq!(
            from_clixml("<S>a<x>skipped</x>b</S>").unwrap(),
            Value::string("ab")
        );
        assert_eq!(
            from_clixml("<Objs><I32>7</I32><B>true</B></Objs>").unwrap(),
            Value::I32(7)
        );
        assert_eq!(from_clixml("<Objs/>").unwrap(), Value::Null);
        // A Ref inside a Ref'd object resolves when the object is read again.
        let text = r#"<Objs><Obj RefId="0"><MS><S N="a">x</S></MS></Obj><Obj RefId="1"><MS><Ref N="inner" RefId="0" /></MS></Obj><Ref RefId="1" /></Objs>"#;
        let all = from_clixml_all(text).unwrap();
        assert_eq!(all[2], all[1]);
        assert_eq!(all[2].prop("inner"), Some(&all[0]));
    }

    #[test]
    fn the_writer_numbers_refs_and_reuses_type_names() {
        let mut w = Writer::new();
        w.begin_object(None, &["A", "System.Object"], Some("a"));
        w.begin_props();
        w.string(Some("P"), "v");
        w.string_list(Some("L"), &[], &["x"]);
        w.end_props();
        w.end_object();
        w.begin_object(None, &["A", "System.Object"], None);
        let mark = w.len();
        w.end_object();
        w.insert_to_string(mark, "b&");
        assert_eq!(
            w.as_str(),
            r#"<Obj RefId="0"><TN RefId="0"><T>A</T><T>System.Object</T></TN><ToString>a</ToString><Props><S N="P">v</S><Obj N="L" RefId="1"><TN RefId="1"><T>System.Object[]</T><T>System.Array</T><T>System.Object</T></TN><LST><S>x</S></LST></Obj></Props></Obj><Obj RefId="2"><TNRef RefId="0" /><ToString>b&amp;</ToString></Obj>"#
        );
    }

    #[test]
    fn base64_round_trips() {
        assert_eq!(base64_decode("UFNS\r\nUA==").unwrap(), b"PSRP");
        assert_eq!(base64_decode("UFNSUA").unwrap(), b"PSRP");
        assert!(base64_decode("UFNSUA==UA").is_none(), "data after padding");
        let long: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        // A known text across a block boundary (48 bytes in, 64 out).
        let text = b"The quick brown fox jumps over the lazy dog, and on and on.";
        assert_eq!(
            base64_encode(text),
            "VGhlIHF1aWNrIGJyb3duIGZveCBqdW1wcyBvdmVyIHRoZSBsYXp5IGRvZywgYW5kIG9uIGFuZCBvbi4="
        );
        assert_eq!(base64_decode(&base64_encode(&long)).unwrap(), long);
        for n in 0..10 {
            let b: Vec<u8> = (0..n).map(|i| (i * 37) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&b)).unwrap(), b);
        }
        assert_eq!(base64_encode(b"PSRP"), "UFNSUA==");
        assert!(base64_decode("a*b").is_none());
    }
}
