//! Fuzzes the resume file reader (`storage::resume::ResumeData::from_bytes`), which reads
//! what a crashed process, a full disk or another program may have left in the state folder.
//! Nothing may panic; whatever parses must write back to bytes that parse to the same data,
//! and its piece set must have the piece count it claims (the engine indexes it by that).
//! Run with `cargo fuzz run resume`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringtorrent::storage::ResumeData;

fuzz_target!(|data: &[u8]| {
    if let Ok(resume) = ResumeData::from_bytes(data) {
        let bytes = resume.to_bytes();
        let again = ResumeData::from_bytes(&bytes).expect("what we write, we read");
        assert_eq!(again, resume);
        assert_eq!(
            again.verified.to_wire().len(),
            (resume.verified.len() as usize).div_ceil(8)
        );
    }
});
