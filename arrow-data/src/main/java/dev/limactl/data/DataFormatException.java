package dev.limactl.data;

/** A data file is missing, malformed or does not follow the example schema; the message names file and record. */
public class DataFormatException extends RuntimeException {
    public DataFormatException(String message) {
        super(message);
    }

    public DataFormatException(String message, Throwable cause) {
        super(message, cause);
    }

    /**
     * What went wrong, for a user: a Jackson parse error's own words and its line and column (its
     * getMessage() appends a "[Source: ...]" fragment), else the exception's message.
     */
    public static String reason(Throwable e) {
        if (e instanceof com.fasterxml.jackson.core.JacksonException j) {
            var at = j.getLocation();
            return j.getOriginalMessage() + (at != null && at.getLineNr() > 0 ? " (line " + at.getLineNr() + ", column " + at.getColumnNr() + ")" : "");
        }
        return String.valueOf(e.getMessage());
    }
}
