pub mod handoff;
pub mod measure;
pub mod peers;
pub mod processes;
