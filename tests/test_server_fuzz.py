"""Fuzzing a live server with random and structured byte streams (hypothesis)
and with mutations of real recorded client sessions.

After every case the server must answer a normal client; at the end the bank
it holds is intact and still takes commits, no request raised an unexpected
exception in the server, its memory and descriptors are back in bounds, and
the file opens without repair.
"""

from soak_runners import fuzz_streams, run_hypothesis, run_mutations


def test_hypothesis_streams(target, report):
    sent = run_hypothesis(target, fuzz_streams(target), examples=300)
    target.finish()
    report("%d hypothesis streams sent; the server answered after each" % sent)


def test_mutated_recorded_sessions(target, report):
    stats = run_mutations(target, cases=1500, seed=3)
    target.finish()
    report("%(sent)d mutated sessions sent (%(skipped)d skipped: they would quit or "
           "write the checked objects); the server answered after each" % stats)
