package dev.limactl.cli;

import dev.limactl.engine.LimaStatus;

/** limactl's exit codes, and the one mapping of native statuses to them. */
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

    /**
     * The exit code of a failed liblima call: the caller's input (arguments, files, shapes, a request
     * this machine cannot serve) is 2; out of memory and I/O are 1 (not the input's fault); a call in
     * the wrong state is 3; an internal error is 4.
     */
    public static int of(LimaStatus status) {
        return switch (status) {
            case OK -> OK;
            case INVALID_ARGUMENT, FORMAT, SHAPE, UNSUPPORTED -> INVALID_INPUT;
            case OUT_OF_MEMORY, IO -> GENERIC;
            case STATE -> UNEXPECTED_STATE;
            case INTERNAL -> INTERNAL;
        };
    }
}
