package dev.limactl.tokenizer;

/** A tokenizer file is missing or unreadable; the message names it. */
public class TokenizerException extends RuntimeException {
    public TokenizerException(String message) {
        super(message);
    }

    public TokenizerException(String message, Throwable cause) {
        super(message, cause);
    }
}
