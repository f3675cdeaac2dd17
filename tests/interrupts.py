"""Ctrl-C at every moment: InterruptAt raises KeyboardInterrupt at the nth
point, within the functions named, where CPython runs a signal handler: on
entering a function, just after a call returns, after a backward jump;
sweep() runs an operation once for each such point it passes."""

import dis
import sys


class InterruptAt:
    """Raise KeyboardInterrupt at the nth signal-handling point within functions."""

    def __init__(self, functions, nth: int):
        self.codes = {function.__code__ for function in functions}
        self.nth = nth
        self.seen = 0
        self.where = None

    @property
    def fired(self) -> bool:
        return self.seen >= self.nth

    def __enter__(self):
        sys.settrace(self._trace_frame)
        return self

    def __exit__(self, *exc):
        sys.settrace(None)

    def _trace_frame(self, frame, event, arg):
        if frame.f_code not in self.codes:
            return None
        frame.f_trace_opcodes = True
        names = {i.offset: i.opname for i in dis.get_instructions(frame.f_code)}
        handlers = _handler_of(frame.f_code)
        previous = [None]

        def trace_opcode(frame, event, arg):
            if event == "opcode" and not self.fired:
                offset, before = frame.f_lasti, previous[0]
                previous[0] = offset
                after_check = (names.get(before, "").startswith("CALL")
                               or names.get(before) == "JUMP_BACKWARD")
                # CPython raises there as part of the instruction before, so
                # the handler that covers that one must cover this one too.
                if names.get(offset) == "RESUME" or (
                        after_check and handlers(before) == handlers(offset)):
                    self.seen += 1
                    if self.fired:
                        self.where = "point %d, %s line %d" % (
                            self.nth, frame.f_code.co_qualname, frame.f_lineno)
                        raise KeyboardInterrupt(self.where)
            return trace_opcode
        return trace_opcode


def _handler_of(code):
    """offset -> where an exception raised there is handled (None: not here)."""
    # Python 3.11's exception table, read with dis's own parser.
    table = dis._parse_exception_table(code)
    return lambda offset: next((entry.target for entry in table
                                if entry.start <= offset < entry.end), None)


def sweep(functions, run) -> int:
    """run(interrupt) for every signal-handling point it passes in functions;
    return how many there were."""
    nth = 1
    while True:
        interrupt = InterruptAt(functions, nth)
        run(interrupt)
        if not interrupt.fired:
            return nth - 1
        nth += 1
