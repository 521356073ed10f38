package dev.limactl.cli;

import static dev.limactl.cli.CliTest.limactl;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.limactl.annotate.Study;
import java.io.File;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.openqa.selenium.By;
import org.openqa.selenium.JavascriptExecutor;
import org.openqa.selenium.OutputType;
import org.openqa.selenium.TakesScreenshot;
import org.openqa.selenium.WebDriver;
import org.openqa.selenium.WebElement;
import org.openqa.selenium.chrome.ChromeDriver;
import org.openqa.selenium.chrome.ChromeDriverService;
import org.openqa.selenium.chrome.ChromeOptions;
import org.openqa.selenium.interactions.Actions;
import org.openqa.selenium.support.ui.WebDriverWait;

/**
 * limactl annotate end to end: the CLI (create, export, report, eval agreement) and the web app in a
 * real headless Chromium driven by Selenium, against a real `limactl annotate serve` process that is
 * killed with SIGKILL mid-study and restarted. The browser tests fail (not skip) without Chromium.
 */
class AnnotateTest {
    @TempDir Path dir;

    static final ObjectMapper JSON = new ObjectMapper();
    static final String CHROMIUM = System.getProperty("lima.chromium", "/usr/bin/chromium");
    static final String CHROMEDRIVER = System.getProperty("lima.chromedriver", "/usr/bin/chromedriver");

    /** Answers of two systems to n prompts; p0's answer carries a script, p1's a code block. */
    Path[] answers(int n) throws Exception {
        StringBuilder a = new StringBuilder(), b = new StringBuilder();
        for (int i = 0; i < n; i++) {
            String ours = switch (i) {
                case 0 -> "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned=2\"> ours-0";
                case 1 -> "Use a loop:\n\n```java\nfor (int i = 0; i < 3; i++) System.out.println(i);\n```\n\nours-1";
                default -> "**ours-" + i + "**: a *careful* answer.";
            };
            a.append(JSON.writeValueAsString(Map.of("id", "p" + i, "prompt", "How do I do task " + i + "?", "response", ours))).append('\n');
            b.append(JSON.writeValueAsString(Map.of("id", "p" + i, "prompt", "How do I do task " + i + "?", "response", "base-" + i))).append('\n');
        }
        Path pa = dir.resolve("limactl.jsonl"), pb = dir.resolve("baseline.jsonl");
        Files.writeString(pa, a);
        Files.writeString(pb, b);
        return new Path[] {pa, pb};
    }

    @Test
    void createExportReportAndAgreementFromTheCommandLine() throws Exception {
        Path[] f = answers(6);
        Path study = dir.resolve("study.db");
        CliTest.Run r = limactl("annotate", "create", study.toString(), "--pairs", f[0].toString(), f[1].toString(), "--annotators", "ann,bob",
                "--overlap", "6");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("created " + study + ": 6 items, pairwise mode, 2 annotator(s)"), r.out());
        assertTrue(Pattern.compile("annotator ann +http://127.0.0.1:8377/a/[A-Za-z0-9_-]{24}").matcher(r.out()).find(), r.out());
        assertTrue(r.out().contains("/owner/"), r.out());
        assertEquals(ExitCodes.UNEXPECTED_STATE, limactl("annotate", "create", study.toString(), "--absolute", f[0].toString()).code());
        CliTest.Run both = limactl("annotate", "create", dir.resolve("x.db").toString(), "--absolute", f[0].toString(), "--pairs", f[0].toString(), f[1].toString());
        assertEquals(ExitCodes.INVALID_INPUT, both.code());
        assertEquals(ExitCodes.INVALID_INPUT, limactl("annotate", "create", dir.resolve("x.db").toString(), "--absolute", f[0].toString(),
                "--annotators", "a,<b>").code());
        assertEquals(ExitCodes.INVALID_INPUT, limactl("annotate", "create", dir.resolve("x.db").toString(), "--absolute",
                dir.resolve("missing.jsonl").toString()).code());
        assertFalse(Files.exists(dir.resolve("x.db")));
        assertEquals(ExitCodes.UNEXPECTED_STATE, limactl("annotate", "report", study.toString(), "--out", dir.resolve("rep").toString()).code(),
                "a report of no answers");
        assertEquals(ExitCodes.INVALID_INPUT, limactl("annotate", "serve", dir.resolve("none.db").toString()).code());

        // known answers: ann always prefers ours; bob agrees on p0-p2, says tie on p3, prefers the baseline on p4-p5
        Study s = Study.open(study);
        for (Study.Annotator a : s.annotators()) {
            for (Study.Shown x : s.queue(a.name())) {
                int i = Integer.parseInt(x.item().substring(1));
                String want = a.name().equals("ann") || i < 3 ? "win" : i == 3 ? "tie" : "loss";
                s.answer(a.name(), x.itemId(), want.equals("tie") ? "neither" : want.equals("win") == x.oursFirst() ? "A" : "B", 1.0, null);
            }
        }
        Path out = dir.resolve("answers.jsonl");
        r = limactl("annotate", "export", study.toString(), "--out", out.toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("wrote 12 answers of 2 annotator(s)"), r.out());
        CliTest.Run toDir = limactl("annotate", "export", study.toString(), "--out", dir.toString());
        assertEquals(ExitCodes.INVALID_INPUT, toDir.code());
        assertTrue(toDir.err().contains("is a directory"), toDir.err());
        // a judge that agrees with ann everywhere
        Path judge = dir.resolve("judge.jsonl");
        StringBuilder j = new StringBuilder();
        for (int i = 0; i < 6; i++) j.append("{\"item\": \"p").append(i).append("\", \"label\": \"win\"}\n");
        Files.writeString(judge, j);
        r = limactl("eval", "agreement", "--humans", out.toString(), "--judge", judge.toString());
        assertEquals(0, r.code(), r.err());
        // ann/bob: 3 x 1 + 0.5 + 2 x 0 = 3.5 of 6
        assertTrue(r.out().contains("ann / bob: tie-discounted agreement 0.583 over 6 shared items"), r.out());
        assertTrue(r.out().contains("ann / judge: tie-discounted agreement 1.000 over 6 shared items"), r.out());
        assertTrue(r.out().contains("human-judge: mean tie-discounted agreement 0.792 over 2 pairs"), r.out());
        assertEquals(ExitCodes.INVALID_INPUT, limactl("eval", "agreement", "--a", out.toString(), "--b", judge.toString()).code(),
                "a study export is not one annotator");
        assertEquals(ExitCodes.INVALID_INPUT, limactl("eval", "agreement", "--humans", out.toString(), "--a", judge.toString()).code());
        r = limactl("annotate", "report", study.toString(), "--out", dir.resolve("rep").toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(Files.size(dir.resolve("rep/human-pairwise.png")) > 1000);
        String md = Files.readString(dir.resolve("rep/human-pairwise.md"));
        assertTrue(md.contains("| baseline | 75.0% | 8.3% | 16.7% | 0 |"), md);
    }

    // ---- the browser ----

    static WebDriver browser(Path profile) {
        assertTrue(new File(CHROMIUM).canExecute() && new File(CHROMEDRIVER).canExecute(),
                "the browser tests need Chromium and its driver at " + CHROMIUM + " and " + CHROMEDRIVER
                        + " (Debian: apt-get install chromium chromium-driver; ci/setup.sh installs them)");
        ChromeOptions o = new ChromeOptions();
        o.setBinary(CHROMIUM);
        o.addArguments("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--no-first-run", "--window-size=1400,1000", "--user-data-dir=" + profile.toAbsolutePath());
        ChromeDriverService svc = new ChromeDriverService.Builder().usingDriverExecutable(new File(CHROMEDRIVER)).usingAnyFreePort().build();
        WebDriver d = new ChromeDriver(svc, o);
        d.manage().timeouts().pageLoadTimeout(Duration.ofSeconds(30));
        return d;
    }

    /** `limactl annotate serve` as its own process; returns it once it listens, with its port. */
    record Server(Process process, int port, Path log) {}

    Server serve(Path study, String logName) throws Exception {
        String javaBin = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Path log = dir.resolve(logName);
        Process p = new ProcessBuilder(javaBin, "-cp", System.getProperty("java.class.path"), Main.class.getName(), "annotate", "serve",
                study.toString(), "--port", "0").redirectErrorStream(true).redirectOutput(log.toFile()).start();
        Pattern serving = Pattern.compile("serving .* on http://127\\.0\\.0\\.1:(\\d+)/");
        long deadline = System.nanoTime() + 60_000_000_000L;
        while (true) {
            Matcher m = serving.matcher(Files.exists(log) ? Files.readString(log) : "");
            if (m.find()) return new Server(p, Integer.parseInt(m.group(1)), log);
            assertTrue(p.isAlive() && System.nanoTime() < deadline, "serve did not start: " + (Files.exists(log) ? Files.readString(log) : ""));
            Thread.sleep(100);
        }
    }

    static void key(WebDriver d, String k) {
        new Actions(d).sendKeys(k).perform();
    }

    static String itemHeading(WebDriver d) {
        return d.findElement(By.tagName("h2")).getText();
    }

    /** Waits until the page is a different item (or the end) after an action. */
    static void waitForNewPage(WebDriver d, WebElement old) {
        new WebDriverWait(d, Duration.ofSeconds(20)).until(x -> {
            try {
                old.isDisplayed();
                return false;
            } catch (org.openqa.selenium.StaleElementReferenceException e) {
                return true;
            }
        });
    }

    static void answerBy(WebDriver d, String k) {
        WebElement h = d.findElement(By.tagName("h2"));
        key(d, k);
        waitForNewPage(d, h);
    }

    @Test
    void annotatorsWorkThroughAStudyInARealBrowserAndAKillLosesNothing() throws Exception {
        Path[] f = answers(8);
        Path study = dir.resolve("study.db");
        CliTest.Run created = limactl("annotate", "create", study.toString(), "--pairs", f[0].toString(), f[1].toString(),
                "--annotators", "ann,bob", "--overlap", "4", "--seed", "3");
        assertEquals(0, created.code(), created.err());
        Study s = Study.open(study);
        String ann = s.annotators().get(0).token(), bob = s.annotators().get(1).token();
        Server server = serve(study, "serve-1.log");
        WebDriver a = browser(dir.resolve("profile-ann")), b = browser(dir.resolve("profile-bob"));
        try {
            String base = "http://127.0.0.1:" + server.port();
            a.get(base + "/a/" + ann);
            b.get(base + "/a/" + bob);
            assertTrue(itemHeading(a).startsWith("Item 1 of 6"), itemHeading(a));
            assertEquals("0 of 6 answered", a.findElement(By.id("progress")).getText());
            // guidelines open with g
            assertFalse(a.findElement(By.id("guidelines")).getDomAttribute("open") != null);
            key(a, "g");
            assertTrue(a.findElement(By.id("guidelines")).getDomAttribute("open") != null, "g did not open the guidelines");
            assertTrue(a.findElement(By.id("guidelines")).getText().contains("Length is not quality"));
            // the timer runs
            new WebDriverWait(a, Duration.ofSeconds(10)).until(x -> !x.findElement(By.id("timer")).getText().equals("0:00"));
            // a draft note survives a reload
            WebElement note = a.findElement(By.id("note"));
            note.sendKeys("draft: A cites a source");
            String before = itemHeading(a);
            a.navigate().refresh();
            assertEquals(before, itemHeading(a));
            assertEquals("draft: A cites a source", a.findElement(By.id("note")).getDomProperty("value"), "the draft was lost on reload");
            // two annotators at once: keyboard for ann, mouse for bob, interleaved
            answerBy(a, "1");
            WebElement hb = b.findElement(By.tagName("h2"));
            b.findElement(By.id("choice-B")).click();
            waitForNewPage(b, hb);
            answerBy(a, "3");
            answerBy(b, "2");
            assertEquals("2 of 6 answered", a.findElement(By.id("progress")).getText());
            // skip with s, then come back to it at the end
            String skipped = itemHeading(a);
            answerBy(a, "s");
            assertNotEquals(skipped, itemHeading(a));
            answerBy(a, "2");
            assertEquals(5, Study.open(study).answers().size());
            List<Study.Answer> rows = Study.open(study).answers();
            Study.Answer first = rows.stream().filter(x -> x.annotator().equals("ann")).findFirst().orElseThrow();
            assertEquals("A", first.choice());
            assertEquals("draft: A cites a source", first.note(), "the note was not submitted with the answer");
            assertTrue(first.seconds() != null && first.seconds() >= 1, "no time recorded: " + first.seconds());

            // the script item and the code item, shown to whichever annotator has them: inert, and code as code
            for (String item : List.of("p0", "p1")) {
                boolean anns = s.queue("ann").stream().anyMatch(x -> x.item().equals(item));
                WebDriver d = anns ? a : b;
                String name = anns ? "ann" : "bob";
                int id = s.queue(name).stream().filter(x -> x.item().equals(item)).findFirst().orElseThrow().itemId();
                d.get(base + "/a/" + (anns ? ann : bob) + "?item=" + id);
                if (item.equals("p0")) {
                    assertTrue(d.getPageSource().contains("window.pwned = 1"), "the script text should be shown as text");
                    assertEquals(null, ((JavascriptExecutor) d).executeScript("return window.pwned === undefined ? null : window.pwned;"),
                            "model output ran as script");
                    assertTrue(d.findElements(By.cssSelector(".md script, .md img")).isEmpty());
                } else {
                    assertFalse(d.findElements(By.cssSelector(".md pre code.language-java")).isEmpty(), "code not rendered as code");
                    Path shot = Path.of("target", "annotate-page.png");
                    Files.createDirectories(shot.getParent());
                    Files.copy(((TakesScreenshot) d).getScreenshotAs(OutputType.FILE).toPath(), shot, StandardCopyOption.REPLACE_EXISTING);
                    assertTrue(Files.size(shot) > 10_000);
                }
            }

            // hostile: bob's item that ann does not have, by id; a form without its CSRF token; a made-up token
            int bobsOnly = s.queue("bob").stream().filter(x -> !x.shared()).findFirst().orElseThrow().itemId();
            a.get(base + "/a/" + ann + "?item=" + bobsOnly);
            assertTrue(a.findElement(By.id("error")).getText().contains("is not one of ann's items"), a.getPageSource());
            a.get(base + "/a/" + ann);
            ((JavascriptExecutor) a).executeScript("document.querySelector('input[name=csrf]').remove();");
            WebElement h = a.findElement(By.tagName("h2"));
            a.findElement(By.id("choice-A")).click();
            waitForNewPage(a, h);
            assertTrue(a.findElement(By.id("error")).getText().contains("form token"), a.getPageSource());
            a.get(base + "/a/" + bob.substring(0, 10) + "x");
            assertTrue(a.findElement(By.id("error")).getText().contains("unknown link"));
            assertEquals(5, Study.open(study).answers().size(), "a refused request wrote an answer");

            // kill -9 mid-study, restart: every submitted answer is there and the annotator goes on
            server.process().destroyForcibly();
            assertTrue(server.process().waitFor(30, java.util.concurrent.TimeUnit.SECONDS));
            assertEquals(137, server.process().exitValue(), "not killed by SIGKILL");
            assertEquals(5, Study.open(study).answers().size());
            server = serve(study, "serve-2.log");
            base = "http://127.0.0.1:" + server.port();
            a.get(base + "/a/" + ann);
            assertEquals("3 of 6 answered", a.findElement(By.id("progress")).getText());
            while (a.findElements(By.id("all-done")).isEmpty()) answerBy(a, "1");
            assertEquals("6 of 6 answered", a.findElement(By.id("progress")).getText());
            assertEquals(8, Study.open(study).answers().size());
            assertTrue(Files.readString(server.log()).contains("POST /a/.../answer 303"), Files.readString(server.log()));
            // the links are printed once at start; the access log (a line per request) never names a token
            assertTrue(Files.readAllLines(server.log()).stream().filter(l -> l.matches("^(GET|POST) .*")).noneMatch(l -> l.contains(ann)),
                    "a token reached the access log");

            // the owner's page
            a.get(base + "/owner/" + s.ownerToken());
            assertTrue(a.findElement(By.id("annotators")).getText().contains("ann 6 6"), a.findElement(By.id("annotators")).getText());
            assertTrue(a.findElement(By.id("agreement")).getText().contains("ann / bob"));
            Object w = ((JavascriptExecutor) a).executeScript("return document.querySelector('img').naturalWidth;");
            assertEquals(800L, ((Number) w).longValue(), "the chart did not load");
        } finally {
            a.quit();
            b.quit();
            server.process().destroy();
            server.process().waitFor();
        }
    }
}
