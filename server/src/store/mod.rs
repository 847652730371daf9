//! Durable storage: see the module essay (filled in by the storage work).
