//! Pipeline output written straight as the REST admin API's JSON.
//!
//! A full listing brings every device as one PIPELINE_OUTPUT message of ≈1.9 KB of CLIXML. Read
//! into an element tree, then into [`easgate_psrp::Value`]s, then into `serde_json::Value`s and
//! only then written out, each object took four allocating representations before the models'
//! serde read it once more; that was a large part of what the PowerShell transport cost per
//! device over REST (docs/benchmarks.md). Here one pass of quick-xml events fills a flat list
//! of nodes that borrow their names and text from the message (text is only copied where it
//! has entity references), and the JSON is written from that list.
//!
//! The JSON is the mapping of [`super::convert`]: properties (adapted, then extended; the first
//! of a name wins) as an object, lists as arrays, dictionaries as objects (the last of a key
//! wins), enums as their names, dates as UTC text; `Ref`s repeat the object they name and
//! `TNRef`s the type names. Errors are [`ClixmlError`]s, as the element tree's reader gives.

use std::borrow::Cow;

use base64::Engine as _;
use easgate_psrp::ClixmlError;
use easgate_psrp::clixml::{base64_decode, decode};
use easgate_psrp::xml::XmlError;
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

/// No node.
const NONE: u32 = u32::MAX;
/// As deep as the element tree's reader allows.
const MAX_DEPTH: usize = 256;

#[derive(Debug)]
struct Node<'a> {
    /// Local name.
    tag: Cow<'a, str>,
    /// The `N` attribute (a property's or an entry's part's name), XML-unescaped.
    n: Option<Cow<'a, str>>,
    /// The `RefId` attribute.
    ref_id: Option<Cow<'a, str>>,
    /// The element's own text, all its text nodes together.
    text: Cow<'a, str>,
    first: u32,
    last: u32,
    next: u32,
    /// Of a `Ref` or `TNRef`: the node its `RefId` named when it was read, if any.
    target: u32,
}

/// One document read into nodes (the root first), and the `RefId`s defined in it.
struct Doc<'a> {
    nodes: Vec<Node<'a>>,
    /// `RefId` → node of each `Obj` (once it ended) and each `TN`, in document order: a later
    /// definition of an id replaces an earlier one. Lists, not maps: a device's message
    /// defines a dozen ids and refers to almost none.
    objects: Vec<(Cow<'a, str>, u32)>,
    types: Vec<(Cow<'a, str>, u32)>,
}

fn lookup(ids: &[(Cow<'_, str>, u32)], id: &str) -> u32 {
    ids.iter()
        .rev()
        .find(|(k, _)| k == id)
        .map_or(NONE, |&(_, i)| i)
}

/// Writes the JSON of one CLIXML document (a PIPELINE_OUTPUT body: its root value, or the first
/// value of an `Objs` root; `null` for an empty `Objs`) to `out`.
pub fn write_json(text: &str, out: &mut Vec<u8>) -> Result<(), ClixmlError> {
    let doc = read(text)?;
    let root: u32 = if doc.nodes[0].tag == "Objs" {
        match doc.nodes[0].first {
            NONE => {
                out.extend_from_slice(b"null");
                return Ok(());
            }
            first => first,
        }
    } else {
        0
    };
    Writer { doc: &doc, out }.value(root)
}

fn syntax(reader: &Reader<&[u8]>, e: impl std::fmt::Display) -> ClixmlError {
    ClixmlError::Xml(XmlError::Syntax {
        position: reader.buffer_position(),
        message: e.to_string(),
    })
}

/// `part`, a slice of what the reader read from `text`, as a slice of `text` itself (the
/// events' borrows are tied to the event, not to the document).
fn within<'a>(text: &'a str, part: &str) -> Option<&'a str> {
    let start = (part.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    text.get(start..start + part.len())
        .filter(|s| s.as_ptr() == part.as_ptr())
}

fn local(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, l)| l)
}

fn read(text: &str) -> Result<Doc<'_>, ClixmlError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = Reader::from_reader(text.as_bytes());
    let mut doc = Doc {
        nodes: Vec::with_capacity(256),
        objects: Vec::new(),
        types: Vec::new(),
    };
    let mut stack: Vec<u32> = Vec::with_capacity(16);
    loop {
        let event = reader.read_event().map_err(|e| syntax(&reader, e))?;
        match event {
            Event::Start(s) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(ClixmlError::Xml(XmlError::TooDeep(MAX_DEPTH)));
                }
                let i = open(&mut doc, text, &reader, &s, stack.last().copied())?;
                stack.push(i);
            }
            Event::Empty(s) => {
                let i = open(&mut doc, text, &reader, &s, stack.last().copied())?;
                close(&mut doc, i);
                if stack.is_empty() {
                    break;
                }
            }
            Event::End(_) => {
                let i = stack
                    .pop()
                    .ok_or_else(|| syntax(&reader, "closing tag without an opening one"))?;
                close(&mut doc, i);
                if stack.is_empty() {
                    break;
                }
            }
            Event::Text(t) => {
                if let Some(&i) = stack.last() {
                    append(&mut doc.nodes[i as usize].text, t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(&i) = stack.last() {
                    append(&mut doc.nodes[i as usize].text, t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                let Some(&i) = stack.last() else { continue };
                let piece = if let Some(c) = r.resolve_char_ref().map_err(|e| syntax(&reader, e))? {
                    Cow::Owned(c.to_string())
                } else if let Some(s) = quick_xml::escape::resolve_predefined_entity(&r) {
                    Cow::Borrowed(s)
                } else {
                    return Err(syntax(&reader, format!("unknown entity &{};", &*r)));
                };
                append(&mut doc.nodes[i as usize].text, piece);
            }
            Event::Eof => {
                return Err(ClixmlError::Xml(if doc.nodes.is_empty() {
                    XmlError::Empty
                } else {
                    XmlError::Syntax {
                        position: reader.buffer_position(),
                        message: "the document ends inside an element".into(),
                    }
                }));
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
    Ok(doc)
}

/// Adds a text piece to an element's text, copying only when there is more than one piece.
fn append<'a>(text: &mut Cow<'a, str>, piece: Cow<'a, str>) {
    if text.is_empty() {
        *text = piece;
    } else {
        text.to_mut().push_str(&piece);
    }
}

fn open<'a>(
    doc: &mut Doc<'a>,
    text: &'a str,
    reader: &Reader<&[u8]>,
    start: &BytesStart<'_>,
    parent: Option<u32>,
) -> Result<u32, ClixmlError> {
    let name = start.name();
    let name = local(name.as_ref());
    let tag = within(text, name).map_or_else(|| Cow::Owned(name.to_owned()), Cow::Borrowed);
    let mut node = Node {
        tag,
        n: None,
        ref_id: None,
        text: Cow::Borrowed(""),
        first: NONE,
        last: NONE,
        next: NONE,
        target: NONE,
    };
    for a in start.attributes() {
        let a = a.map_err(|e| syntax(reader, e))?;
        let key = a.key.as_ref();
        let slot = match local(key) {
            _ if key == "xmlns" || key.starts_with("xmlns:") => continue,
            "N" => &mut node.n,
            "RefId" => &mut node.ref_id,
            _ => continue,
        };
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| syntax(reader, e))?;
        *slot = Some(match value {
            Cow::Borrowed(v) => {
                within(text, v).map_or_else(|| Cow::Owned(v.to_owned()), Cow::Borrowed)
            }
            Cow::Owned(v) => Cow::Owned(v),
        });
    }
    let i = u32::try_from(doc.nodes.len()).expect("fewer than 4 G elements");
    doc.nodes.push(node);
    if let Some(p) = parent {
        let p = &mut doc.nodes[p as usize];
        let prev = p.last;
        p.last = i;
        if prev == NONE {
            p.first = i;
        } else {
            doc.nodes[prev as usize].next = i;
        }
    }
    Ok(i)
}

/// An element ended: objects and type name lists with a `RefId` can be referred to from now
/// on (as a reader in document order finds them), and a reference takes what its `RefId`
/// names now.
fn close(doc: &mut Doc<'_>, i: u32) {
    let node = &doc.nodes[i as usize];
    let tag = node.tag.clone();
    // A clone of a borrowed id is a copy of the reference.
    let Some(id) = node.ref_id.clone() else {
        return;
    };
    match &*tag {
        "Obj" => doc.objects.push((id, i)),
        "TN" => doc.types.push((id, i)),
        "Ref" => doc.nodes[i as usize].target = lookup(&doc.objects, &id),
        "TNRef" => doc.nodes[i as usize].target = lookup(&doc.types, &id),
        _ => {}
    }
}

fn bad(node: &Node<'_>, what: &'static str) -> ClixmlError {
    ClixmlError::BadPrimitive {
        tag: node.tag.clone().into_owned(),
        text: node.text.clone().into_owned(),
        what,
    }
}

/// What an `Obj` holds, the last of each kind winning as in the value reader.
#[derive(Default)]
struct Parts {
    /// `TN` or the `TN` a `TNRef` names.
    types: Option<u32>,
    to_string: Option<u32>,
    adapted: Option<u32>,
    extended: Option<u32>,
    /// `LST`/`IE`/`STK`/`QUE` or `DCT`.
    container: Option<u32>,
    /// Any other child: the object's primitive value.
    base: Option<u32>,
}

/// The children of node `i`, in document order.
fn children<'d>(doc: &'d Doc<'_>, i: u32) -> impl Iterator<Item = u32> + 'd {
    let mut c = doc.nodes[i as usize].first;
    std::iter::from_fn(move || {
        (c != NONE).then(|| {
            let this = c;
            c = doc.nodes[c as usize].next;
            this
        })
    })
}

/// Whether `s` has a `_x`/`_X` (the start of an `_xHHHH_` escape). A byte scan: a substring
/// search is set up anew for each call, and a listing makes a hundred calls per object.
fn has_escape(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter()
        .zip(b.iter().skip(1))
        .any(|(&u, &x)| u == b'_' && (x == b'x' || x == b'X'))
}

struct Writer<'d, 'a> {
    doc: &'d Doc<'a>,
    out: &'d mut Vec<u8>,
}

impl<'d, 'a> Writer<'d, 'a> {
    fn node(&self, i: u32) -> &'d Node<'a> {
        &self.doc.nodes[i as usize]
    }

    fn children(&self, i: u32) -> impl Iterator<Item = u32> + 'd {
        children(self.doc, i)
    }

    fn string(&mut self, s: &str) {
        serde_json::to_writer(&mut *self.out, s).expect("writing to memory");
    }

    /// Text with `_xHHHH_` escapes, as a JSON string.
    fn decoded(&mut self, s: &str) {
        if has_escape(s) {
            self.string(&decode(s));
        } else {
            self.string(s);
        }
    }

    fn number<T>(&mut self, i: u32, what: &'static str) -> Result<(), ClixmlError>
    where
        T: std::str::FromStr + serde::Serialize,
    {
        let node = self.node(i);
        let n: T = node.text.trim().parse().map_err(|_| bad(node, what))?;
        serde_json::to_writer(&mut *self.out, &n).expect("writing to memory");
        Ok(())
    }

    fn value(&mut self, i: u32) -> Result<(), ClixmlError> {
        let node = self.node(i);
        match &*node.tag {
            "Nil" => self.out.extend_from_slice(b"null"),
            "S" => self.decoded(&node.text),
            "B" => match node.text.trim() {
                "true" | "True" => self.out.extend_from_slice(b"true"),
                "false" | "False" => self.out.extend_from_slice(b"false"),
                _ => return Err(bad(node, "boolean")),
            },
            "I32" => self.number::<i32>(i, "32-bit integer")?,
            "I64" => self.number::<i64>(i, "64-bit integer")?,
            "U32" => self.number::<u32>(i, "unsigned 32-bit integer")?,
            "U64" => self.number::<u64>(i, "unsigned 64-bit integer")?,
            "Db" => {
                let f = match node.text.trim() {
                    "Infinity" | "-Infinity" | "NaN" => f64::NAN,
                    t => t.parse::<f64>().map_err(|_| bad(node, "double"))?,
                };
                // JSON has no infinities or NaN: null, as serde_json's numbers make them.
                match serde_json::Number::from_f64(f) {
                    Some(n) => {
                        serde_json::to_writer(&mut *self.out, &n).expect("writing to memory")
                    }
                    None => self.out.extend_from_slice(b"null"),
                }
            }
            "DT" => {
                let text = super::convert::utc_text(node.text.trim());
                self.string(&text);
            }
            "G" => {
                let g: easgate_psrp::Guid =
                    node.text.trim().parse().map_err(|_| bad(node, "GUID"))?;
                self.string(&g.to_string());
            }
            "Version" => self.string(node.text.trim()),
            "C" => {
                let unit: u16 = node
                    .text
                    .trim()
                    .parse()
                    .map_err(|_| bad(node, "UTF-16 code unit"))?;
                let c = char::from_u32(u32::from(unit)).map_or_else(String::new, String::from);
                self.string(&c);
            }
            "BA" => {
                let bytes = base64_decode(&node.text).ok_or_else(|| bad(node, "base64 text"))?;
                let text = base64::engine::general_purpose::STANDARD.encode(bytes);
                self.string(&text);
            }
            "Ref" => match node.target {
                NONE => {
                    let id = node.ref_id.as_deref().unwrap_or_default().to_owned();
                    return Err(ClixmlError::UnknownRef("Ref", id));
                }
                t => self.value(t)?,
            },
            "Obj" => self.object(i)?,
            "SB" | "By" | "I16" | "U16" | "Sg" | "D" | "TS" | "URI" | "XD" | "SBK" | "SS"
            | "PR" => self.decoded(&node.text),
            other => return Err(ClixmlError::UnknownElement(other.to_owned())),
        }
        Ok(())
    }

    fn object(&mut self, i: u32) -> Result<(), ClixmlError> {
        let mut parts = Parts::default();
        for c in self.children(i) {
            let child = self.node(c);
            match &*child.tag {
                "TN" => parts.types = Some(c),
                "TNRef" => match child.target {
                    NONE => {
                        let id = child.ref_id.as_deref().unwrap_or_default().to_owned();
                        return Err(ClixmlError::UnknownRef("TNRef", id));
                    }
                    t => parts.types = Some(t),
                },
                "ToString" => parts.to_string = Some(c),
                "Props" => parts.adapted = Some(c),
                "MS" => parts.extended = Some(c),
                "LST" | "IE" | "STK" | "QUE" | "DCT" => parts.container = Some(c),
                _ => parts.base = Some(c),
            }
        }
        if let Some(c) = parts.container {
            return if self.node(c).tag == "DCT" {
                self.dictionary(c)
            } else {
                self.out.push(b'[');
                for (k, item) in self.children(c).enumerate() {
                    if k > 0 {
                        self.out.push(b',');
                    }
                    self.value(item)?;
                }
                self.out.push(b']');
                Ok(())
            };
        }
        let doc = self.doc;
        let mut props = [parts.adapted, parts.extended]
            .into_iter()
            .flatten()
            .flat_map(|p| children(doc, p))
            .peekable();
        if props.peek().is_some() {
            return self.properties(props);
        }
        if let Some(s) = parts.to_string {
            let is_enum = parts.types.is_some_and(|t| {
                self.children(t).any(|n| {
                    let n = self.node(n);
                    n.tag == "T" && decode(&n.text).ends_with("System.Enum")
                })
            });
            if parts.base.is_none() || is_enum {
                self.decoded(&self.node(s).text);
                return Ok(());
            }
        }
        match parts.base {
            Some(b) => self.value(b),
            None => {
                self.out.extend_from_slice(b"null");
                Ok(())
            }
        }
    }

    /// Properties as an object; the first of a name wins.
    fn properties(&mut self, props: impl Iterator<Item = u32>) -> Result<(), ClixmlError> {
        let doc = self.doc;
        let name = |p: u32| -> Cow<'_, str> {
            let n = doc.nodes[p as usize].n.as_deref().unwrap_or_default();
            if has_escape(n) {
                Cow::Owned(decode(n))
            } else {
                Cow::Borrowed(n)
            }
        };
        let mut seen: Vec<Cow<'_, str>> = Vec::with_capacity(64);
        self.out.push(b'{');
        for p in props {
            let key = name(p);
            if seen.contains(&key) {
                continue;
            }
            if !seen.is_empty() {
                self.out.push(b',');
            }
            self.string(&key);
            self.out.push(b':');
            self.value(p)?;
            seen.push(key);
        }
        self.out.push(b'}');
        Ok(())
    }

    /// A `DCT` as an object: keys that are not text are their JSON; the last of a key wins.
    fn dictionary(&mut self, c: u32) -> Result<(), ClixmlError> {
        let mut entries: Vec<(String, u32)> = Vec::new();
        let en: Vec<u32> = self
            .children(c)
            .filter(|&e| self.node(e).tag == "En")
            .collect();
        for e in en {
            let (mut key, mut value) = (None, None);
            for kv in self.children(e) {
                match self.node(kv).n.as_deref() {
                    Some("Key") => key = Some(kv),
                    Some("Value") => value = Some(kv),
                    _ => {}
                }
            }
            let (Some(key), Some(value)) = (key, value) else {
                return Err(ClixmlError::BadEntry);
            };
            let mut text = Vec::new();
            Writer {
                doc: self.doc,
                out: &mut text,
            }
            .value(key)?;
            let key = match serde_json::from_slice::<String>(&text) {
                Ok(s) => s,
                Err(_) => String::from_utf8(text).expect("JSON is UTF-8"),
            };
            entries.push((key, value));
        }
        self.out.push(b'{');
        let mut first = true;
        for (k, (key, value)) in entries.iter().enumerate() {
            if entries[k + 1..].iter().any(|(later, _)| later == key) {
                continue;
            }
            if !first {
                self.out.push(b',');
            }
            first = false;
            self.string(key);
            self.out.push(b':');
            self.value(*value)?;
        }
        self.out.push(b'}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::psrp::convert::to_json;
    use easgate_psrp::{Container, ListKind, Object, Value, from_clixml};

    /// The JSON of `clixml` as this module writes it, read back.
    fn streamed(clixml: &str) -> Result<serde_json::Value, ClixmlError> {
        let mut out = Vec::new();
        write_json(clixml, &mut out)?;
        Ok(serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out))))
    }

    /// The same document through the value reader and `to_json`.
    fn reference(clixml: &str) -> Result<serde_json::Value, ClixmlError> {
        from_clixml(clixml).map(|v| to_json(&v))
    }

    fn same(clixml: &str) -> serde_json::Value {
        let got = streamed(clixml);
        assert_eq!(got, reference(clixml), "{clixml}");
        got.unwrap()
    }

    fn obj(types: &[&str], to_string: Option<&str>, props: Vec<(&str, Value)>) -> Value {
        Value::Object(Box::new(Object {
            type_names: types.iter().map(|s| (*s).to_owned()).collect(),
            to_string: to_string.map(str::to_owned),
            adapted: props.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ..Object::default()
        }))
    }

    #[test]
    fn an_escape_is_an_underscore_before_an_x_of_either_case() {
        for (text, escaped) in [
            ("_x0041_", true),
            ("a_X0041_", true),
            ("x_", false),
            ("_", false),
            ("", false),
            ("snake_case_name", false),
            ("ends_", false),
        ] {
            assert_eq!(has_escape(text), escaped, "{text:?}");
        }
    }

    #[test]
    fn exchange_objects_write_the_json_of_the_value_mapping() {
        let mvp = |items: &[&str]| {
            Value::Object(Box::new(Object {
                type_names: vec![
                    "Deserialized.Microsoft.Exchange.Data.MultiValuedProperty`1".into(),
                ],
                container: Container::List(
                    ListKind::List,
                    items.iter().map(|s| Value::string(*s)).collect(),
                ),
                ..Object::default()
            }))
        };
        let state = |name: &str| {
            Value::enumeration(
                "Microsoft.Exchange.Data.Directory.SystemConfiguration.DeviceAccessState",
                name,
                3,
            )
        };
        let types = [
            "Deserialized.Microsoft.Exchange.Data.Directory.SystemConfiguration.MobileDevice",
            "Deserialized.System.Object",
        ];
        // Two devices of one type in one message: the second's type names are a TNRef, and
        // its enum's too.
        let devices = Value::array(vec![
            obj(
                &types,
                Some("iPhone§ABC"),
                vec![
                    (
                        "Identity",
                        Value::string("alice\\ExchangeActiveSyncDevices\\iPhone§ABC"),
                    ),
                    ("DeviceId", Value::string("ABC")),
                    ("DeviceOS", Value::Null),
                    (
                        "FirstSyncTime",
                        Value::DateTime("2024-05-01T10:00:00.1234567".into()),
                    ),
                    (
                        "WhenChanged",
                        Value::DateTime("2024-05-02T10:00:00+02:00".into()),
                    ),
                    ("DeviceAccessState", state("Quarantined")),
                    ("DeviceAccessStateReason", state("Global")),
                    ("Ids", mvp(&["a", "b <&> \"c\" \\ é \u{1F600}"])),
                    ("Empty", mvp(&[])),
                    ("Count", Value::I32(-7)),
                    ("Big", Value::I64(1 << 40)),
                    ("U", Value::U32(7)),
                    ("UU", Value::U64(u64::MAX)),
                    ("Ratio", Value::Double(0.25)),
                    ("Nan", Value::Double(f64::NAN)),
                    ("Inf", Value::Double(f64::NEG_INFINITY)),
                    ("Yes", Value::Bool(true)),
                    (
                        "Guid",
                        Value::Guid("00112233-4455-6677-8899-aabbccddeeff".parse().unwrap()),
                    ),
                    ("Version", Value::Version("15.2.1118.7".into())),
                    ("Char", Value::Char(65)),
                    ("Surrogate", Value::Char(0xD800)),
                    ("Bytes", Value::Bytes(vec![0, 1, 2, 255])),
                    (
                        "Span",
                        Value::Other {
                            tag: "TS".into(),
                            text: "PT9.02S".into(),
                        },
                    ),
                    (
                        "Escaped_x005F_Name\r\n",
                        Value::string("tab\there\r\nline _x0041_"),
                    ),
                ],
            ),
            obj(
                &types,
                Some("Android§DEF"),
                vec![
                    ("DeviceId", Value::string("DEF")),
                    ("DeviceAccessState", state("Allowed")),
                    ("DeviceAccessStateReason", state("Individual")),
                    (
                        "Settings",
                        Value::hashtable(vec![
                            (Value::string("Add"), Value::string("first")),
                            (Value::I32(5), Value::string("five")),
                            (Value::string("Add"), Value::string("last wins")),
                        ]),
                    ),
                ],
            ),
        ]);
        let clixml = easgate_psrp::clixml::to_clixml(&devices);
        assert!(clixml.contains("<TNRef"), "{clixml}");
        let json = same(&clixml);
        assert_eq!(json[0]["DeviceAccessState"], "Quarantined");
        assert_eq!(json[1]["DeviceAccessState"], "Allowed");
        assert_eq!(json[0]["FirstSyncTime"], "2024-05-01T10:00:00.1234567Z");
        assert_eq!(json[0]["Nan"], serde_json::Value::Null);
        assert_eq!(json[1]["Settings"]["Add"], "last wins");
        assert_eq!(json[1]["Settings"]["5"], "five");
        // Each device alone, as a PIPELINE_OUTPUT carries it.
        let each: Vec<_> = devices
            .as_list()
            .unwrap()
            .iter()
            .map(|d| same(&easgate_psrp::clixml::to_clixml(d)))
            .collect();
        let d: crate::exchange::models::MobileDevice =
            serde_json::from_value(each[0].clone()).unwrap();
        assert_eq!((d.device_id.as_str(), d.mailbox()), ("ABC", "alice"));
    }

    #[test]
    fn references_entities_and_odd_shapes_read_alike() {
        for doc in [
            // A Ref repeats an object defined before it; extended properties after adapted
            // ones, the first of a name winning.
            r#"<Obj RefId="0"><Props><Obj N="A" RefId="1"><TN RefId="0"><T>X</T></TN><ToString>a</ToString><Props><S N="p">1</S></Props></Obj><Ref N="B" RefId="1" /><S N="A">dup</S></Props><MS><S N="C">c</S><S N="A">dup2</S></MS></Obj>"#,
            // Entities and character references in text and names, CDATA, a BOM, comments.
            "\u{feff}<?xml version=\"1.0\"?><!-- x --><Obj RefId=\"0\"><MS><S N=\"a&amp;b\">x &lt;y&gt; &#65;&#x42;<![CDATA[<z>]]></S><S N=\"n\">_x000A__xD83D__xDE00_</S></MS></Obj>",
            // An enum without properties is its name; another object with a base is its base;
            // with neither, its ToString; with nothing, null.
            r#"<Obj RefId="0"><TN RefId="0"><T>System.DayOfWeek</T><T>System.Enum</T></TN><ToString>Monday</ToString><I32>1</I32></Obj>"#,
            r#"<Obj RefId="0"><TN RefId="0"><T>System.Uri</T></TN><ToString>shown</ToString><S>base</S></Obj>"#,
            r#"<Obj RefId="0"><ToString>only text</ToString></Obj>"#,
            r#"<Obj RefId="0"></Obj>"#,
            // Lists of every kind, nested; an Objs root gives its first value.
            r#"<Objs><Obj RefId="0"><STK><Obj RefId="1"><QUE><Obj RefId="2"><IE><I32>1</I32></IE></Obj></QUE></Obj><Nil /></STK></Obj><S>ignored</S></Objs>"#,
            "<Objs />",
            r#"<Db>Infinity</Db>"#,
            r#"<BA>AAEC /w==</BA>"#,
            r#"<x:S xmlns:x="urn:x">prefixed</x:S>"#,
        ] {
            same(doc);
        }
    }

    #[test]
    fn bad_documents_are_refused_as_the_value_reader_refuses_them() {
        for doc in [
            r#"<Obj RefId="0"><Props><I32 N="n">seven</I32></Props></Obj>"#,
            r#"<Obj RefId="0"><Props><Ref N="n" RefId="9" /></Props></Obj>"#,
            r#"<Obj RefId="0"><TNRef RefId="3" /><ToString>x</ToString></Obj>"#,
            r#"<Obj RefId="0"><Props><Widget N="n" /></Props></Obj>"#,
            r#"<Obj RefId="0"><DCT><En><S N="Key">k</S></En></DCT></Obj>"#,
            r#"<G>not a guid</G>"#,
            r#"<B>maybe</B>"#,
            r#"<BA>!!!</BA>"#,
            // A reference to the object it sits in, which is not defined until it ends.
            r#"<Obj RefId="0"><Props><Ref N="me" RefId="0" /></Props></Obj>"#,
        ] {
            let got = streamed(doc).expect_err(doc);
            assert_eq!(Err(got), reference(doc), "{doc}");
        }
        // Not XML: both refuse (positions may differ).
        for doc in ["", "<Obj><Props></Obj>", "<S>open", "<S>&bogus;</S>"] {
            assert!(streamed(doc).is_err(), "{doc}");
            assert!(reference(doc).is_err(), "{doc}");
        }
    }
}
