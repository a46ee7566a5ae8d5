//! Small helpers over `roxmltree` shared by the YAWL and PNML readers: namespace-blind child
//! lookup by local name, trimmed text, and decoding of the input bytes.

use roxmltree::{Document, Node, ParsingOptions};

use crate::error::ImportError;

/// Most XML nodes accepted in one document (a guard against memory blow-up).
const NODES_LIMIT: u32 = 2_000_000;

/// Decodes the bytes of an XML document: UTF-8 (with or without BOM), or ISO-8859-1 when the
/// declaration says so (or the bytes are not UTF-8).
pub(crate) fn decode(bytes: &[u8]) -> String {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// Deepest element nesting accepted (models nest a handful of levels; a deeper document is an
/// attack on whatever walks it recursively).
pub const MAX_DEPTH: usize = 256;

/// Parses a document with a node limit, a nesting limit and no DTD (so no entity expansion).
pub(crate) fn parse<'a>(text: &'a str, format: &'static str) -> Result<Document<'a>, ImportError> {
    let opts = ParsingOptions {
        allow_dtd: false,
        nodes_limit: NODES_LIMIT,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(text, opts).map_err(|e| ImportError::Syntax {
        format,
        reason: e.to_string(),
    })?;
    // Depth of each node by its id (document order: a parent comes before its children).
    let mut depth = vec![0usize; doc.descendants().count() + 1];
    for n in doc.descendants().filter(|n| n.is_element()) {
        let d = n.parent().map_or(0, |p| {
            depth.get(p.id().get() as usize).copied().unwrap_or(0)
        }) + 1;
        if d > MAX_DEPTH {
            let pos = doc.text_pos_at(n.range().start);
            return Err(ImportError::Syntax {
                format,
                reason: format!(
                    "elements nested deeper than {MAX_DEPTH} levels (at line {})",
                    pos.row
                ),
            });
        }
        if let Some(slot) = depth.get_mut(n.id().get() as usize) {
            *slot = d;
        }
    }
    Ok(doc)
}

pub(crate) fn children<'a, 'i>(
    n: Node<'a, 'i>,
    name: &'static str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    n.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

pub(crate) fn child<'a, 'i>(n: Node<'a, 'i>, name: &'static str) -> Option<Node<'a, 'i>> {
    children(n, name).next()
}

/// The trimmed text content of a node (all text descendants), `None` when empty.
pub(crate) fn text(n: Node<'_, '_>) -> Option<String> {
    let s: String = n
        .descendants()
        .filter(|d| d.is_text())
        .filter_map(|d| d.text())
        .collect();
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// Text of child `name`.
pub(crate) fn child_text(n: Node<'_, '_>, name: &'static str) -> Option<String> {
    child(n, name).and_then(text)
}

/// Attribute by local name, whatever its namespace.
pub(crate) fn attr<'a>(n: Node<'a, '_>, name: &str) -> Option<&'a str> {
    n.attributes().find(|a| a.name() == name).map(|a| a.value())
}

/// A required attribute.
pub(crate) fn req_attr<'a>(
    n: Node<'a, '_>,
    name: &str,
    what: &str,
) -> Result<&'a str, ImportError> {
    attr(n, name).ok_or_else(|| {
        let pos = n.document().text_pos_at(n.range().start);
        ImportError::malformed(
            format!("<{}> at line {}", n.tag_name().name(), pos.row),
            format!("{what} has no '{name}' attribute"),
        )
    })
}
