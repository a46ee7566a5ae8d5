//! Roles, permissions, namespaces and the one table that says what every RPC needs.
//!
//! Roles nest: `admin` ⊇ `operator` ⊇ `reader`. A principal's permissions are
//! `namespace:role` pairs (Temporal's form); the namespace `*` stands for every namespace. The
//! role a principal holds in a namespace is the highest of the pairs that match it.
//!
//! [`RPC_TABLE`] maps every gRPC method the server serves to what it needs; a method not in
//! the table is refused (PERMISSION_DENIED) whoever calls it. A test enumerates the services'
//! descriptors and fails when a method is missing from the table, or the table names one that
//! does not exist.

use std::fmt;

/// A role: what a principal may do in a namespace. Ordered: `Reader < Operator < Admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads workflows and cases: Get*, List*, WatchCase, exports.
    Reader = 1,
    /// Runs cases: CreateCase, task operations, CancelCase, SubmitEvents (and what a reader may).
    Operator = 2,
    /// Registers workflows (the model importer: the largest parser surface), and all the rest.
    Admin = 3,
}

impl Role {
    /// The role's name as permissions spell it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::Reader, Role::Operator, Role::Admin];

    /// The role named `s` (`reader`, `operator`, `admin`).
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "reader" => Some(Role::Reader),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The namespace a request acts in when it names none (`knhk-namespace` metadata absent).
pub const DEFAULT_NAMESPACE: &str = "default";

/// The request metadata that names the namespace a call acts in.
pub const NAMESPACE_HEADER: &str = "knhk-namespace";

/// Whether `ns` is a valid namespace name: 1 to 63 characters of `a-z`, `0-9`, `-`, `_`, `.`,
/// starting with a letter or digit.
pub fn valid_namespace(ns: &str) -> bool {
    let b = ns.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.')
        })
        && !b[0].is_ascii_uppercase()
}

/// One `namespace:role` permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    /// A namespace, or `None` for `*` (every namespace).
    pub namespace: Option<String>,
    pub role: Role,
}

impl Permission {
    /// Parses `namespace:role` (`*:role` for every namespace). `None` when it is not of that
    /// form, names an unknown role or an invalid namespace.
    pub fn parse(s: &str) -> Option<Permission> {
        let (ns, role) = s.rsplit_once(':')?;
        let role = Role::parse(role)?;
        let namespace = match ns {
            "*" => None,
            ns if valid_namespace(ns) => Some(ns.to_string()),
            _ => return None,
        };
        Some(Permission { namespace, role })
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.namespace.as_deref().unwrap_or("*"),
            self.role
        )
    }
}

/// A principal's permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions(pub Vec<Permission>);

impl Permissions {
    /// The highest role held in `namespace`.
    pub fn role_in(&self, namespace: &str) -> Option<Role> {
        self.0
            .iter()
            .filter(|p| p.namespace.as_deref().is_none_or(|n| n == namespace))
            .map(|p| p.role)
            .max()
    }

    /// The highest role held in any namespace.
    pub fn any_role(&self) -> Option<Role> {
        self.0.iter().map(|p| p.role).max()
    }

    /// Parses each entry; entries that are not `namespace:role` with a known role are
    /// skipped (an identity provider may put other permissions in the same claim). Returns the
    /// permissions and the number skipped.
    pub fn parse_all<'a>(entries: impl IntoIterator<Item = &'a str>) -> (Permissions, usize) {
        let mut v = Vec::new();
        let mut skipped = 0;
        for e in entries {
            match Permission::parse(e) {
                Some(p) => v.push(p),
                None => skipped += 1,
            }
        }
        (Permissions(v), skipped)
    }
}

/// Where a required role must be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// In the namespace the request acts in (`knhk-namespace`, default `default`).
    Namespace,
    /// In any namespace: for calls that touch no namespace's data (server reflection).
    AnyNamespace,
}

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: no credentials needed (health checks; a TLS port still demands the client
    /// certificate its configuration requires, at the handshake).
    Open,
    /// An authenticated principal holding at least this role in that scope.
    Role(Role, Scope),
}

const fn ns(r: Role) -> Need {
    Need::Role(r, Scope::Namespace)
}

/// Every method the gRPC port serves and what it needs. Anything else is refused.
pub const RPC_TABLE: &[(&str, Need)] = &[
    // knhk.v1.Knhk: workflows
    ("/knhk.v1.Knhk/RegisterWorkflow", ns(Role::Admin)),
    ("/knhk.v1.Knhk/RetireWorkflow", ns(Role::Admin)),
    ("/knhk.v1.Knhk/DeleteWorkflow", ns(Role::Admin)),
    ("/knhk.v1.Knhk/GetWorkflow", ns(Role::Reader)),
    ("/knhk.v1.Knhk/ListWorkflows", ns(Role::Reader)),
    // cases
    ("/knhk.v1.Knhk/CreateCase", ns(Role::Operator)),
    ("/knhk.v1.Knhk/StartTask", ns(Role::Operator)),
    ("/knhk.v1.Knhk/CompleteTask", ns(Role::Operator)),
    ("/knhk.v1.Knhk/StartInstances", ns(Role::Operator)),
    ("/knhk.v1.Knhk/StartInstance", ns(Role::Operator)),
    ("/knhk.v1.Knhk/CompleteInstance", ns(Role::Operator)),
    ("/knhk.v1.Knhk/AddInstance", ns(Role::Operator)),
    ("/knhk.v1.Knhk/ListInstances", ns(Role::Reader)),
    ("/knhk.v1.Knhk/FireTask", ns(Role::Operator)),
    ("/knhk.v1.Knhk/CancelTask", ns(Role::Operator)),
    ("/knhk.v1.Knhk/CancelCase", ns(Role::Operator)),
    ("/knhk.v1.Knhk/GetCase", ns(Role::Reader)),
    ("/knhk.v1.Knhk/WatchCase", ns(Role::Reader)),
    ("/knhk.v1.Knhk/ListCases", ns(Role::Reader)),
    ("/knhk.v1.Knhk/ExportCaseXes", ns(Role::Reader)),
    ("/knhk.v1.Knhk/ExportXes", ns(Role::Reader)),
    ("/knhk.v1.Knhk/SubmitEvents", ns(Role::Operator)),
    // cluster: partition owners and their addresses (no case data)
    (
        "/knhk.v1.Knhk/GetTopology",
        Need::Role(Role::Reader, Scope::AnyNamespace),
    ),
    // grpc.health.v1: load balancers and orchestrators present no credentials.
    ("/grpc.health.v1.Health/Check", Need::Open),
    ("/grpc.health.v1.Health/Watch", Need::Open),
    // Server reflection: the API's shape, no data.
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Need::Role(Role::Reader, Scope::AnyNamespace),
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Need::Role(Role::Reader, Scope::AnyNamespace),
    ),
];

/// What `path` (`/package.Service/Method`) needs; `None` for a method not in the table.
pub fn need(path: &str) -> Option<Need> {
    RPC_TABLE.iter().find(|(p, _)| *p == path).map(|(_, n)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_parse_and_nest() {
        let (p, skipped) = Permissions::parse_all([
            "default:operator",
            "*:reader",
            "ops:admin",
            "bad",
            "x:root",
            "UPPER:reader",
            "a:b:reader",
        ]);
        assert_eq!(skipped, 4, "{p:?}");
        assert_eq!(p.role_in("default"), Some(Role::Operator));
        assert_eq!(p.role_in("other"), Some(Role::Reader));
        assert_eq!(p.role_in("ops"), Some(Role::Admin));
        assert_eq!(p.any_role(), Some(Role::Admin));
        assert_eq!(Permissions::default().role_in("default"), None);
        assert!(Role::Reader < Role::Operator && Role::Operator < Role::Admin);
    }

    #[test]
    fn namespace_names() {
        for ok in ["default", "a", "prod-eu.1", "x_y", "0abc"] {
            assert!(valid_namespace(ok), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in ["", "*", "-a", "A", "a b", "a/b", "a:b", long.as_str(), "é"] {
            assert!(!valid_namespace(bad), "{bad}");
        }
    }

    #[test]
    fn table_has_each_path_once() {
        let mut paths: Vec<&str> = RPC_TABLE.iter().map(|(p, _)| *p).collect();
        paths.sort_unstable();
        let n = paths.len();
        paths.dedup();
        assert_eq!(paths.len(), n, "a path is listed twice");
        assert_eq!(need("/knhk.v1.Knhk/Nope"), None);
    }
}
