package dev.limactl.eval;

/** The judge could not be asked (HTTP error after retries, bad credentials, unreachable server). */
public class JudgeException extends RuntimeException {
    public JudgeException(String message) {
        super(message);
    }

    public JudgeException(String message, Throwable cause) {
        super(message, cause);
    }
}
