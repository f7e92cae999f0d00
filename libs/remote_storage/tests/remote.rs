//! Integration tests of `remote_storage` against real servers: the conformance suite on
//! every backend (`conformance_local_fs::*`, `conformance_s3::*`, `conformance_azure::*`;
//! `slow_link_*` with 2 s timeouts),
//! the retrying and unreliable wrappers, and bad-input handling.

// Test code: a failed unwrap is a failed test (clippy.toml allows it only inside #[test]s,
// and the suite's helpers live outside them).
#![allow(clippy::unwrap_used)]

mod common;
mod suite;

mod bad_input;
mod wrappers;

/// Instantiates every conformance case for one backend, as `<module>::<case>`.
macro_rules! conformance_suite {
    ($module:ident, $setup:path; $($case:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(storage) = $setup().await else { return };
                    crate::suite::$case(&storage).await;
                }
            )*
        }
    };
}

macro_rules! all_cases {
    ($module:ident, $setup:path) => {
        conformance_suite!(
            $module, $setup;
            list_with_and_without_delimiter_paginated,
            ranges,
            if_none_match,
            metadata_round_trip,
            overwrite,
            delete_missing_and_existing,
            batch_delete_over_batch_size,
            delete_prefix,
            copy,
            large_multipart_upload_50mib,
            cancel_mid_download,
            concurrent_uploads,
            invalid_paths_rejected,
            upload_from_file,
            overwrite_during_a_large_download,
        );
    };
}

all_cases!(conformance_local_fs, crate::common::local_fs);
conformance_suite!(slow_link_local_fs, crate::common::local_fs_slow_link;
    slow_but_steady_transfers_outlive_the_timeout);
conformance_suite!(slow_link_s3, crate::common::s3_slow_link;
    slow_but_steady_transfers_outlive_the_timeout);
conformance_suite!(slow_link_azure, crate::common::azure_slow_link;
    slow_but_steady_transfers_outlive_the_timeout);
all_cases!(conformance_s3, crate::common::s3);
all_cases!(conformance_azure, crate::common::azure);
