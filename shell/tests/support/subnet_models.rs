//! Models of the sub-net case tests (`grpc_subnets`, `cluster_subnets`).

/// `A`, then the composite task `C` (sub-net `Sub`: `X` then `Y`), then `B`.
pub const NESTED: &str = r#"{
  "name": "nested", "id": "Top",
  "conditions": [
    { "id": "i", "kind": "input", "flows": [ { "to": "A" } ] },
    { "id": "o", "kind": "output" }
  ],
  "tasks": [
    { "id": "A", "flows": [ { "to": "C" } ] },
    { "id": "C", "decomposesTo": "Sub", "flows": [ { "to": "B" } ] },
    { "id": "B", "flows": [ { "to": "o" } ] }
  ],
  "subnets": [ {
    "id": "Sub",
    "conditions": [
      { "id": "si", "kind": "input", "flows": [ { "to": "X" } ] },
      { "id": "so", "kind": "output" }
    ],
    "tasks": [
      { "id": "X", "flows": [ { "to": "Y" } ] },
      { "id": "Y", "flows": [ { "to": "so" } ] }
    ]
  } ]
}"#;
