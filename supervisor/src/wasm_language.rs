//! The language a module was written in, for `status` and `status --watch`:
//! read from the wasm's `producers` custom section (the toolchain records
//! its source languages there), or from the custom sections only the Go
//! toolchain writes. Informational only: nothing is decided on it.

/// The module's language in lower case (`rust`, `go`, `c`, `c++`), or
/// `None` when the toolchain did not say.
///
/// A module lists every language linked into it (a Rust module with C in
/// its standard library says `Rust, C11`), so the first of Rust, Go, C++
/// and C that appears wins.
pub fn language(wasm: &[u8]) -> Option<&'static str> {
    let mut languages = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let Ok(wasmparser::Payload::CustomSection(section)) = payload else {
            continue;
        };
        if section.name().starts_with("go:") || section.name().starts_with("go.") {
            languages.push("Go".to_string());
        }
        let wasmparser::KnownCustom::Producers(producers) = section.as_known() else {
            continue;
        };
        for field in producers.into_iter().flatten() {
            if field.name != "language" {
                continue;
            }
            for value in field.values.into_iter().flatten() {
                languages.push(value.name.to_string());
            }
        }
    }
    let has = |p: &dyn Fn(&str) -> bool| languages.iter().any(|l| p(l));
    if has(&|l| l == "Rust") {
        Some("rust")
    } else if has(&|l| l == "Go") {
        Some("go")
    } else if has(&|l| l.starts_with("C++")) {
        Some("c++")
    } else if has(&|l| l.starts_with('C')) {
        Some("c")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module with one custom section.
    fn with_custom(name: &str, body: &[u8]) -> Vec<u8> {
        let mut payload = vec![name.len() as u8];
        payload.extend_from_slice(name.as_bytes());
        payload.extend_from_slice(body);
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        wasm.push(0);
        wasm.push(payload.len() as u8);
        wasm.extend_from_slice(&payload);
        wasm
    }

    /// A `producers` body with one field `language` and `values`.
    fn producers(values: &[&str]) -> Vec<u8> {
        let mut body = vec![1, 8];
        body.extend_from_slice(b"language");
        body.push(values.len() as u8);
        for v in values {
            body.push(v.len() as u8);
            body.extend_from_slice(v.as_bytes());
            body.push(0); // empty version
        }
        body
    }

    #[test]
    fn the_producers_languages_name_the_module_language() {
        let lang = |values: &[&str]| language(&with_custom("producers", &producers(values)));
        assert_eq!(lang(&["Rust", "C11"]), Some("rust"));
        assert_eq!(lang(&["C11", "C99"]), Some("c"));
        assert_eq!(lang(&["C++17", "C11"]), Some("c++"));
        assert_eq!(lang(&[]), None);
        assert_eq!(language(&with_custom("go:buildid", b"x")), Some("go"));
        assert_eq!(language(b"\0asm\x01\0\0\0"), None);
        assert_eq!(language(b"not wasm"), None);
    }
}
