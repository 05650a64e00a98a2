// `embed_migrations!` reads migrations/ at compile time; without this, cargo would not
// rebuild the crate when a migration is added or edited (diesel_migrations' advice).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
