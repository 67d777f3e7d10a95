//! Jobs that hold an `AppState`'s content layer and run beside the server or from the CLI:
//! garbage collection (`gc.rs`).

pub mod gc;
