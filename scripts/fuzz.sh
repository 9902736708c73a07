#!/usr/bin/env bash
# Fuzz the webhook decoder and the SSE frame builder with libFuzzer.
#   scripts/fuzz.sh [seconds]      default 20
# Compiles Fuzz/FuzzWebhook.swift together with the handful of HeraldCore sources it needs (Foundation only, no
# package build) with -sanitize=fuzzer,address into .build/fuzz/fuzz-webhook; rebuilds only when one of those
# files changed. Runs it for the given time on a working corpus under .build/fuzz/corpus, seeded from
# Fuzz/corpus (the repo's seeds are never written to). Exits non-zero when the fuzzer finds a crash, a leak or
# a broken invariant; the input that did it is left in .build/fuzz/artifacts/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

seconds=${1:-20}
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 1)); then
    echo "usage: scripts/fuzz.sh [seconds]" >&2
    exit 2
fi

OUT=.build/fuzz
BIN=$OUT/fuzz-webhook
SOURCES=(
    Fuzz/FuzzWebhook.swift
    Sources/HeraldCore/Webhook/WebhookDecoder.swift
    Sources/HeraldCore/Webhook/NativeDeltaReader.swift
    Sources/HeraldCore/Model/JSONValue.swift
    Sources/HeraldCore/Model/Chat.swift
    Sources/HeraldCore/Model/UUID+Text.swift
    Sources/HeraldCore/Frames/StreamEvent.swift
    Sources/HeraldCore/Frames/FrameEncoder.swift
)
mkdir -p "$OUT/corpus" "$OUT/artifacts"

now() { date +%s%N; }

stale=0
[[ -x $BIN ]] || stale=1
for source in "${SOURCES[@]}" "${BASH_SOURCE[0]}"; do
    [[ $source -nt $BIN ]] && stale=1
done
if ((stale)); then
    start=$(now)
    # -wmo: one frontend for the 7 files. lld: gold prints hundreds of harmless warnings about ASan symbols.
    # Warnings of our own code are errors here, as in the package.
    swiftc -sanitize=fuzzer,address -parse-as-library -O -wmo -swift-version 6 \
        -enable-upcoming-feature ExistentialAny -enable-upcoming-feature MemberImportVisibility \
        -warnings-as-errors -use-ld=lld -module-name HeraldFuzz \
        "${SOURCES[@]}" -o "$BIN.tmp"
    mv "$BIN.tmp" "$BIN"
    elapsed=$(($(now) - start))
    printf 'fuzz.sh: built %s in %d.%d s\n' "$BIN" $((elapsed / 1000000000)) $((elapsed % 1000000000 / 100000000))
fi

# Swift's crash reporter would run inside ASan and report itself; a failed precondition should simply trap.
export SWIFT_BACKTRACE=enable=no

# New interesting inputs go to the first directory (the working corpus); Fuzz/corpus only seeds it.
args=(-dict=Fuzz/webhook.dict -artifact_prefix="$OUT/artifacts/" -max_len=8192 -print_final_stats=1)
set +e
"$BIN" "${args[@]}" -max_total_time="$seconds" "$OUT/corpus" Fuzz/corpus 2>"$OUT/last-run.log"
rc=$?
set -e
grep -E '^(#[0-9]+[[:space:]]+DONE|stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb))|ERROR|SUMMARY|==[0-9]+==|Test unit written|Fatal error|precondition' \
    "$OUT/last-run.log" | head -n 40 || true

if ((rc != 0)); then
    echo "fuzz.sh: FAILED (fuzzer exit $rc); full log: $OUT/last-run.log" >&2
    sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$OUT/last-run.log" | while read -r artifact; do
        echo "fuzz.sh: reproduce with: SWIFT_BACKTRACE=enable=no $BIN $artifact" >&2
    done
    exit 1
fi
echo "fuzz.sh: no crash in ${seconds} s. Longer run (Ctrl-C to stop; -jobs=N for more cores):"
echo "    SWIFT_BACKTRACE=enable=no $BIN ${args[*]} -max_total_time=3600 $OUT/corpus Fuzz/corpus"
