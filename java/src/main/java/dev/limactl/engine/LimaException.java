package dev.limactl.engine;

/** A liblima call failed. Carries the native status and the native message (which names file, tensor or field). */
public class LimaException extends RuntimeException {
    private final LimaStatus status;

    public LimaException(LimaStatus status, String message) {
        super(message);
        if (status == LimaStatus.OK) throw new IllegalArgumentException("a LimaException needs a failing status");
        this.status = status;
    }

    /** The lima_status of the failed call. */
    public LimaStatus status() {
        return status;
    }
}
