package dev.limactl.cli;

/** limactl's exit codes. */
public final class ExitCodes {
    public static final int OK = 0;
    /** A failure not caused by the input (I/O error while writing, ...). */
    public static final int GENERIC = 1;
    /** Bad input: arguments, config keys or values, data or model files. */
    public static final int INVALID_INPUT = 2;
    /** The request does not fit the current state (an existing run without --resume, nothing to resume). */
    public static final int UNEXPECTED_STATE = 3;
    /** A bug: please report it with the message. */
    public static final int INTERNAL = 4;
    /** Stopped by Ctrl-C after saving a resumable state. */
    public static final int INTERRUPTED = 130;

    private ExitCodes() {}
}
