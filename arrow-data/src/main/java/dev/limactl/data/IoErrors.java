package dev.limactl.data;

import java.nio.file.AccessDeniedException;
import java.nio.file.DirectoryNotEmptyException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.FileSystemException;
import java.nio.file.NoSuchFileException;
import java.nio.file.NotDirectoryException;

/**
 * An I/O failure in words for an error message. Java's file-system exceptions for the commonest
 * causes (a missing path, a denied permission) carry only the path, so "cannot write out.gguf:
 * /x/.out.gguf.tmp" would not say what went wrong; this names the cause, then the path involved.
 */
public final class IoErrors {
    private IoErrors() {}

    public static String why(Exception e) {
        if (e instanceof FileSystemException f) {
            String reason = f.getReason() != null ? f.getReason()
                    : f instanceof NoSuchFileException ? "no such file or directory"
                    : f instanceof AccessDeniedException ? "permission denied"
                    : f instanceof FileAlreadyExistsException ? "it already exists"
                    : f instanceof DirectoryNotEmptyException ? "the directory is not empty"
                    : f instanceof NotDirectoryException ? "not a directory"
                    : f.getClass().getSimpleName();
            String path = f.getFile() == null ? "" : " (" + f.getFile() + (f.getOtherFile() != null ? " -> " + f.getOtherFile() : "") + ")";
            return reason + path;
        }
        return e.getMessage() != null ? e.getMessage() : e.toString();
    }
}
