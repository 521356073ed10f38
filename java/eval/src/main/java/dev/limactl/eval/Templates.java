package dev.limactl.eval;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.Map;

/**
 * Judge prompt templates: editable text files with {placeholders}. The defaults (resources
 * {@code templates/*.txt}) follow the paper's protocols; a user's file replaces one by name.
 */
public record Templates(String name, String text) {
    public static Templates load(String protocol, Path userFile) {
        if (userFile != null) {
            try {
                return new Templates(userFile.getFileName().toString(), dev.limactl.data.Utf8Text.read(userFile));
            } catch (NoSuchFileException e) {
                throw new IllegalArgumentException("template file " + userFile + " does not exist");
            } catch (IOException e) {
                throw new UncheckedIOException("cannot read " + userFile, e);
            }
        }
        try (InputStream in = Templates.class.getResourceAsStream("templates/" + protocol + ".txt")) {
            if (in == null) throw new IllegalArgumentException("no default template for protocol " + protocol);
            return new Templates(protocol + ".txt", new String(in.readAllBytes(), StandardCharsets.UTF_8));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    public String fill(Map<String, String> values) {
        String out = text;
        for (var e : values.entrySet()) out = out.replace("{" + e.getKey() + "}", e.getValue());
        return out;
    }
}
