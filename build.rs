//! Rebuilds when a database migration is added: `sqlx::migrate!` embeds the files it saw at
//! compile time, and cargo only notices changes to those, not new files in the folder.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
