//! A small element tree read with `quick-xml`, for the documents WS-Management carries
//! (CLIXML, SOAP envelopes, `creationXml`): names are kept without their namespace prefix, as
//! both protocols' element names are unambiguous within a document; text is unescaped.

use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

/// One element.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// Local name (prefix removed).
    pub name: String,
    /// Attributes by local name (prefix removed), values unescaped.
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    /// The element's own text, all its text nodes concatenated.
    pub text: String,
}

/// A document that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("malformed XML at byte {position}: {message}")]
    Syntax { position: u64, message: String },
    #[error("the document has no root element")]
    Empty,
    #[error("the document is nested deeper than {0} elements")]
    TooDeep(usize),
}

const MAX_DEPTH: usize = 256;

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Depth-first search for the first descendant (or self) with this local name.
    pub fn find(&self, name: &str) -> Option<&Element> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }

    /// Follows a path of child names.
    pub fn path(&self, names: &[&str]) -> Option<&Element> {
        names.iter().try_fold(self, |e, n| e.child(n))
    }
}

fn local(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, l)| l)
}

fn syntax(reader: &Reader<&[u8]>, e: impl std::fmt::Display) -> XmlError {
    XmlError::Syntax {
        position: reader.buffer_position(),
        message: e.to_string(),
    }
}

fn open(reader: &Reader<&[u8]>, start: &BytesStart<'_>) -> Result<Element, XmlError> {
    let mut el = Element {
        name: local(start.name().as_ref()).to_owned(),
        ..Element::default()
    };
    for a in start.attributes() {
        let a = a.map_err(|e| syntax(reader, e))?;
        let key = a.key.as_ref();
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| syntax(reader, e))?;
        el.attrs.push((local(key).to_owned(), value.into_owned()));
    }
    Ok(el)
}

/// Reads the root element of `text`.
pub fn parse(text: &str) -> Result<Element, XmlError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = Reader::from_reader(text.as_bytes());
    let mut stack: Vec<Element> = Vec::new();
    loop {
        let event = reader.read_event().map_err(|e| syntax(&reader, e))?;
        match event {
            Event::Start(s) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep(MAX_DEPTH));
                }
                let el = open(&reader, &s)?;
                stack.push(el);
            }
            Event::Empty(s) => {
                let el = open(&reader, &s)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(el),
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| syntax(&reader, "closing tag without an opening one"))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(el),
                }
            }
            Event::Text(t) => {
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                let Some(el) = stack.last_mut() else { continue };
                if let Some(c) = r.resolve_char_ref().map_err(|e| syntax(&reader, e))? {
                    el.text.push(c);
                } else if let Some(s) = quick_xml::escape::resolve_predefined_entity(&r) {
                    el.text.push_str(s);
                } else {
                    return Err(syntax(&reader, format!("unknown entity &{};", &*r)));
                }
            }
            Event::Eof => {
                return Err(if stack.is_empty() {
                    XmlError::Empty
                } else {
                    syntax(&reader, "the document ends inside an element")
                });
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
}

/// Escapes text for an XML element or a double-quoted attribute.
pub fn escape_into(out: &mut String, s: &str) {
    let mut last = 0;
    for (i, b) in s.bytes().enumerate() {
        let rep = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            _ => continue,
        };
        out.push_str(&s[last..i]);
        out.push_str(rep);
        last = i + 1;
    }
    out.push_str(&s[last..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_without_prefixes_attributes_and_unescaped_text() {
        let doc = r#"<?xml version="1.0"?><s:Envelope xmlns:s="x"><s:Body a:k="1 &amp; 2"><t>a &lt;b&gt; &#65;<![CDATA[<c>]]></t><e/></s:Body></s:Envelope>"#;
        let e = parse(doc).unwrap();
        assert_eq!(e.name, "Envelope");
        let body = e.child("Body").unwrap();
        assert_eq!(body.attr("k"), Some("1 & 2"));
        assert_eq!(body.child("t").unwrap().text, "a <b> A<c>");
        assert!(e.find("e").is_some());
        assert_eq!(e.path(&["Body", "t"]).unwrap().name, "t");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(parse("<a><b></a>"), Err(XmlError::Syntax { .. })));
        assert_eq!(parse(""), Err(XmlError::Empty));
        assert!(parse("<a>").is_err());
        let mut s = String::new();
        escape_into(&mut s, "a<&>\"b");
        assert_eq!(s, "a&lt;&amp;&gt;&quot;b");
    }
}
