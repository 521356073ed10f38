package dev.limactl.train;

/** The run directory is not in the state the request needs (an existing run without --resume, nothing to resume). */
public class RunStateException extends RuntimeException {
    public RunStateException(String message) {
        super(message);
    }
}
