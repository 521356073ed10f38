package dev.limactl.engine;

/** A liblima call failed. Carries the native status and the native message (which names file, tensor or field). */
public class LimaException extends RuntimeException {
    private final int status;
    private final String statusName;

    public LimaException(int status, String statusName, String message) {
        super(message);
        this.status = status;
        this.statusName = statusName;
    }

    /** The lima_status code (see lima.h). */
    public int status() {
        return status;
    }

    /** e.g. "LIMA_ERR_FORMAT". */
    public String statusName() {
        return statusName;
    }

    /** True for errors caused by the caller's input (arguments, files, shapes), as opposed to internal ones. */
    public boolean isInputError() {
        return status >= 1 && status <= 4;
    }
}
