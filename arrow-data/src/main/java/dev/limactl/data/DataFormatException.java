package dev.limactl.data;

/** A data file is missing, malformed or does not follow the example schema; the message names file and record. */
public class DataFormatException extends RuntimeException {
    public DataFormatException(String message) {
        super(message);
    }

    public DataFormatException(String message, Throwable cause) {
        super(message, cause);
    }
}
