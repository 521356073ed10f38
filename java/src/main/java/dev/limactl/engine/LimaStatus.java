package dev.limactl.engine;

/** The status codes of lima.h's {@code lima_status}, one constant per code, in the same order. */
public enum LimaStatus {
    /** The call succeeded. */
    OK(0),
    /** A bad value passed by the caller (null, out of range, NaN). */
    INVALID_ARGUMENT(1),
    /** A file could not be opened, read or written. */
    IO(2),
    /** A file is malformed or truncated (JSON, safetensors). */
    FORMAT(3),
    /** A tensor or buffer has the wrong shape or size, or a config mismatch. */
    SHAPE(4),
    /** An allocation failed (host or device). */
    OUT_OF_MEMORY(5),
    /** A valid request this build or machine cannot serve (device, dtype, config feature). */
    UNSUPPORTED(6),
    /** The call is not allowed in the handle's current state. */
    STATE(7),
    /** A bug: please report it with the message. */
    INTERNAL(8);

    private final int code;

    LimaStatus(int code) {
        this.code = code;
    }

    /** The integer lima.h uses. */
    public int code() {
        return code;
    }

    /** The name {@code lima_status_name} gives it, e.g. "LIMA_ERR_FORMAT". */
    public String nativeName() {
        return this == OK ? "LIMA_OK" : "LIMA_ERR_" + name();
    }

    /** The constant for a native code; a code this binding does not know is an internal error. */
    public static LimaStatus of(int code) {
        for (LimaStatus s : values()) {
            if (s.code == code) return s;
        }
        throw new IllegalStateException("liblima returned status " + code + ", unknown to this binding: rebuild both");
    }
}
