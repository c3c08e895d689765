//! Generates the Varlink server and client code from the IDL in `interfaces/`:
//! the `.varlink` files are the contract, and nothing in `src/` restates them.
fn main() {
    varlink_generator::cargo_build_many(&[
        "interfaces/org.aptostree.Sysroot.varlink",
        "interfaces/io.systemd.service.varlink",
        "interfaces/org.aptostree.Update.varlink",
    ]);
}
