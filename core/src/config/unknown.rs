//! Unknown keys: every one in a file is reported, each with its path and the
//! keys that would have been read there, along with every other problem.
//!
//! serde's `deny_unknown_fields` stops at the first unknown key, so an
//! operator fixing a file would learn of its typos one run at a time. The file
//! structs therefore accept any key, and [`parse_yaml`] reads the document
//! through `serde_ignored`, which reports each key nothing read. Which keys a
//! section has is asked of the section's own derived `Deserialize` (the names
//! it hands to `deserialize_struct`), so the hint cannot drift from the code.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::gateways::{FileGateway, FileOutbound, FileProbe};
use super::policy::{PolicyFile, PolicySources};
use super::registrar::{KeepaliveFile, RegistrarConfig, UserFile};
use super::schema::{
    ControlFile, FileCdr, FileConfig, FileInbound, FileRoute, FileTrunk, LimitsConfig,
    ListenDetailed, LogConfig, MetricsFile, SipConfig, TraceConfig,
};
use super::session_timer::SessionTimerFile;
use super::tls::TlsFile;

/// A key nothing in the config reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UnknownKey {
    /// Its path in the notation of every other problem: `trunks[1].inbound.frm`.
    pub path: String,
    pub message: String,
}

/// Deserializes the config file, collecting every unknown key on the way
/// (those found before a syntax or type error too).
pub(super) fn parse_yaml(text: &str) -> (Result<FileConfig, serde_yaml::Error>, Vec<UnknownKey>) {
    let mut unknown = Vec::new();
    let result = serde_ignored::deserialize(serde_yaml::Deserializer::from_str(text), |path| {
        let (parent, key) = key_path(&path);
        let path = match (&parent, &key) {
            (_, None) => parent.clone(),
            (p, Some(k)) if p.is_empty() => k.clone(),
            (p, Some(k)) => format!("{p}.{k}"),
        };
        unknown.push(UnknownKey {
            path,
            message: message(&parent),
        })
    });
    (result, unknown)
}

/// Splits a `serde_ignored` path into its parent (in Vigil's notation) and the
/// ignored key.
fn key_path(path: &serde_ignored::Path<'_>) -> (String, Option<String>) {
    use serde_ignored::Path;
    fn render(path: &Path<'_>, out: &mut String) {
        match path {
            Path::Root => {}
            Path::Seq { parent, index } => {
                render(parent, out);
                out.push_str(&format!("[{index}]"));
            }
            Path::Map { parent, key } => {
                render(parent, out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Path::Some { parent }
            | Path::NewtypeStruct { parent }
            | Path::NewtypeVariant { parent } => render(parent, out),
        }
    }
    match path {
        Path::Map { parent, key } => {
            let mut p = String::new();
            render(parent, &mut p);
            (p, Some(key.clone()))
        }
        other => {
            let mut p = String::new();
            render(other, &mut p);
            (p, None)
        }
    }
}

/// "unknown key, expected one of …" for a key found under `parent`.
fn message(parent: &str) -> String {
    match known_keys(parent) {
        Some([one]) => format!("unknown key, expected `{one}`"),
        Some(keys) => format!(
            "unknown key, expected one of {}",
            keys.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => "unknown key".into(),
    }
}

/// The keys of the section at `parent` (list indices left out).
fn known_keys(parent: &str) -> Option<&'static [&'static str]> {
    let mut shape = String::with_capacity(parent.len());
    let mut in_index = false;
    for c in parent.chars() {
        match c {
            '[' => in_index = true,
            ']' => {
                in_index = false;
                shape.push_str("[]");
            }
            _ if in_index => {}
            c => shape.push(c),
        }
    }
    Some(match shape.as_str() {
        "" => fields_of::<FileConfig>(),
        "listen[]" => fields_of::<ListenDetailed>(),
        "trunks[]" => fields_of::<FileTrunk>(),
        "trunks[].inbound" => fields_of::<FileInbound>(),
        "trunks[].outbound" => fields_of::<FileOutbound>(),
        "trunks[].outbound.gateways[]" => fields_of::<FileGateway>(),
        "trunks[].outbound.probe" => fields_of::<FileProbe>(),
        "trunks[].session_timer" | "session_timer" => fields_of::<SessionTimerFile>(),
        "trunks[].policy" => fields_of::<PolicySources>(),
        "routes[]" => fields_of::<FileRoute>(),
        "cdr" => fields_of::<FileCdr>(),
        "log" => fields_of::<LogConfig>(),
        "sip" => fields_of::<SipConfig>(),
        "registrar" => fields_of::<RegistrarConfig>(),
        "users[]" => fields_of::<UserFile>(),
        "users[].nat_keepalive" | "nat_keepalive" => fields_of::<KeepaliveFile>(),
        "policy" => fields_of::<PolicyFile>(),
        "control" => fields_of::<ControlFile>(),
        "metrics" => fields_of::<MetricsFile>(),
        "trace" => fields_of::<TraceConfig>(),
        "limits" => fields_of::<LimitsConfig>(),
        "dns" => fields_of::<crate::dns::DnsFile>(),
        "tls" => fields_of::<TlsFile>(),
        _ => return None,
    })
    .filter(|keys| !keys.is_empty())
}

/// The field names `T`'s derived `Deserialize` asks for: it passes them to
/// `deserialize_struct`, where this deserializer takes note and stops.
fn fields_of<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    struct Spy<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Spy<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("only structs are asked for their fields"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields noted"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    // The error is the point: the spy stops `T` once it has named its fields.
    let _ = T::deserialize(Spy(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_name_their_keys() {
        assert_eq!(fields_of::<FileInbound>(), ["from"]);
        assert_eq!(message("trunks[3].inbound"), "unknown key, expected `from`");
        assert!(
            message("users[0].nat_keepalive").contains("`period`"),
            "{}",
            message("users[0].nat_keepalive")
        );
        assert!(
            message("").contains("`listen`, `trunks`"),
            "{}",
            message("")
        );
        assert_eq!(message("routes[0].trunk"), "unknown key");
    }
}
