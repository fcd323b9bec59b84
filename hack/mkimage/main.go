// Command mkimage writes small, deterministic OCI image layout archives for
// tupper's tests and demo, importable with `ctr images import`.
//
// Kinds:
//
//	busybox  one layer: Debian's static busybox, its applet symlinks,
//	         /etc/passwd and /etc/group, /tmp, /proc, /sys, /dev.
//	layers   the busybox layer plus three layers exercising hardlinks,
//	         symlinks, owners, setuid/setgid bits, whiteouts, opaque and
//	         deleted directories. The rootfs a snapshotter must produce is
//	         written down in layers-rootfs.txt next to this file.
//	big      the busybox layer plus one layer per host directory in
//	         -dirs (by default /usr/local/go/{bin,pkg,src,test}): real
//	         files, well over 100 MB, for
//	         benchmarking unpack. Owners are root, times fixed; only
//	         directories, regular files and symlinks are taken. Its
//	         layers are compressed with gzip's fastest level.
//	escape   the busybox layer plus /escape, a symlink that climbs out of
//	         any rootfs (../../../../../../../../tmp): for the shim's
//	         tests that a mount through it is refused.
//	pause    one static binary, /pause, as the entrypoint (-pause).
//	dir      one layer per directory of -rootfs (comma-separated, lowest
//	         first), taken as it is on disk (owners, modes, symlinks, hard
//	         links); -user, -entrypoint, -cmd, -workdir and -env set the
//	         config. hack/critest-images.sh builds critest's images so.
//
// Usage:
//
//	go run ./hack/mkimage -kind layers -name tupper.local/layers:latest -o layers.tar
//
// The output depends only on the flags and on the busybox binary (and, for
// big, on the host directories; for dir, on the -rootfs trees): every
// timestamp is fixed and entries are written in a fixed order.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// epoch is the modification time of every file and the image creation time.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

func main() {
	kind := flag.String("kind", "busybox", "image kind: busybox, layers, escape, pause, big or dir")
	dirs := flag.String("dirs", strings.Join(defaultBigDirs, ","), "big: comma-separated host directories, one layer each")
	name := flag.String("name", "", "image reference stored in the archive (default tupper.local/<kind>:latest)")
	out := flag.String("o", "", "output archive path (required)")
	busybox := flag.String("busybox", "/bin/busybox", "static busybox binary to put into the image")
	pauseBin = flag.String("pause", "_output/bin/pause", "static pause binary for -kind pause (hack/install-cri.sh builds it)")
	rootfs := flag.String("rootfs", "", "-kind dir: root filesystem directories, one layer each, lowest first, comma-separated")
	user := flag.String("user", "", "-kind dir: the image's USER")
	entrypoint := flag.String("entrypoint", "", "-kind dir: entrypoint as a JSON array")
	cmd := flag.String("cmd", `["/bin/sh"]`, "-kind dir: command as a JSON array")
	workdir := flag.String("workdir", "/", "-kind dir: working directory")
	var env []string
	flag.Func("env", "-kind dir: NAME=value, repeatable (default: PATH only)", func(s string) error {
		env = append(env, s)
		return nil
	})
	flag.Parse()

	if *out == "" {
		fmt.Fprintln(os.Stderr, "mkimage: -o is required")
		flag.Usage()
		os.Exit(2)
	}
	if *name == "" {
		*name = "tupper.local/" + *kind + ":latest"
	}
	if *kind == "dir" {
		img := dirImage{user: *user, workdir: *workdir, env: env}
		if *rootfs != "" {
			img.layers = strings.Split(*rootfs, ",")
		}
		var err error
		if img.entrypoint, err = parseArgv("entrypoint", *entrypoint); err == nil {
			img.cmd, err = parseArgv("cmd", *cmd)
		}
		if err == nil {
			err = writeDir(*name, *out, img)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "mkimage:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*kind, *name, *out, *busybox, strings.Split(*dirs, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(kind, name, out, busybox string, dirs []string) error {
	base, err := busyboxLayer(busybox)
	if err != nil {
		return err
	}
	var layers []layer
	level := gzip.BestCompression
	switch kind {
	case "busybox":
		layers = []layer{base}
	case "layers":
		layers = append([]layer{base}, testLayers()...)
	case "escape":
		layers = []layer{base, {comment: "a symlink out of the rootfs", entries: []entry{
			symlink("escape", "../../../../../../../../tmp"),
		}}}
	case "pause":
		return writePause(name, out, *pauseBin)
	case "big":
		layers = []layer{base}
		for _, d := range dirs {
			l, err := hostLayer(d)
			if err != nil {
				return err
			}
			layers = append(layers, l)
		}
		level = gzip.BestSpeed
	default:
		return fmt.Errorf("unknown kind %q (want busybox, layers, escape, pause, big or dir)", kind)
	}
	archive, err := imageArchive(name, layers, level)
	if err != nil {
		return err
	}
	return writeArchive(out, archive)
}

// writeArchive writes to a temporary name first so an interrupted run never
// leaves a truncated archive behind under the final name.
func writeArchive(out string, archive []byte) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, archive, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

// layer is one image layer: a name for the history and its tar entries in
// the order they are written.
type layer struct {
	comment string
	entries []entry
}

// entry is one tar member. Paths are written without a leading slash.
type entry struct {
	hdr  tar.Header
	body []byte
}

func hdr(typ byte, name string, mode int64, uid, gid int) tar.Header {
	return tar.Header{
		Typeflag: typ,
		Name:     name,
		Mode:     mode,
		Uid:      uid,
		Gid:      gid,
		ModTime:  epoch,
		Format:   tar.FormatPAX,
	}
}

func dir(name string, mode int64, uid, gid int) entry {
	return entry{hdr: hdr(tar.TypeDir, name+"/", mode, uid, gid)}
}

func file(name string, mode int64, uid, gid int, content string) entry {
	h := hdr(tar.TypeReg, name, mode, uid, gid)
	h.Size = int64(len(content))
	return entry{hdr: h, body: []byte(content)}
}

func symlink(name, target string) entry {
	h := hdr(tar.TypeSymlink, name, 0o777, 0, 0)
	h.Linkname = target
	return entry{hdr: h}
}

// hardlink makes name a second name of target, which must come earlier in
// the same layer.
func hardlink(name, target string) entry {
	h := hdr(tar.TypeLink, name, 0o644, 0, 0)
	h.Linkname = target
	return entry{hdr: h}
}

// whiteout deletes name (file or directory) from the layers below.
func whiteout(name string) entry {
	return file(filepath.Join(filepath.Dir(name), ".wh."+filepath.Base(name)), 0o644, 0, 0, "")
}

// opaque hides everything the layers below have in directory name.
func opaque(name string) entry {
	return file(name+"/.wh..wh..opq", 0o644, 0, 0, "")
}

// tarLayer returns the uncompressed and the gzip-compressed layer.
func tarLayer(l layer, level int) (raw, gz []byte, err error) {
	var rb bytes.Buffer
	tw := tar.NewWriter(&rb)
	for _, e := range l.entries {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", h.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, nil, err
	}
	var gb bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gb, level)
	if err != nil {
		return nil, nil, err
	}
	// The gzip header keeps its zero ModTime and no name: deterministic.
	if _, err := zw.Write(rb.Bytes()); err != nil {
		return nil, nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, nil, err
	}
	return rb.Bytes(), gb.Bytes(), nil
}

func sha(b []byte) digest.Digest {
	s := sha256.Sum256(b)
	return digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(s[:]))
}

// blob is a content-addressed file of the OCI layout.
type blob struct {
	desc ocispec.Descriptor
	data []byte
}

func newBlob(mediaType string, data []byte) blob {
	return blob{
		desc: ocispec.Descriptor{MediaType: mediaType, Digest: sha(data), Size: int64(len(data))},
		data: data,
	}
}

func jsonBlob(mediaType string, v any) (blob, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return blob{}, err
	}
	return newBlob(mediaType, data), nil
}

// imageArchive builds an OCI image layout (oci-layout, index.json,
// blobs/sha256/...) as a tar archive holding one linux/amd64 image.
func imageArchive(name string, layers []layer, level int) ([]byte, error) {
	return imageArchiveCmd(name, layers, level, nil, []string{"/bin/sh"})
}

// imageArchiveCmd is imageArchive with the image's entrypoint and command.
func imageArchiveCmd(name string, layers []layer, level int, entrypoint, cmd []string) ([]byte, error) {
	return imageArchiveConfig(name, layers, level, imageConfig{entrypoint: entrypoint, cmd: cmd})
}

// imageConfig is what an image's config says about running it. Empty
// workdir means "/"; nil env means the usual PATH only.
type imageConfig struct {
	user       string
	entrypoint []string
	cmd        []string
	workdir    string
	env        []string
}

// imageArchiveConfig is imageArchive with a full image config.
func imageArchiveConfig(name string, layers []layer, level int, ic imageConfig) ([]byte, error) {
	blobs, layerDs, diffIDs, history, err := layerBlobs(layers, level)
	if err != nil {
		return nil, err
	}
	if ic.workdir == "" {
		ic.workdir = "/"
	}
	if ic.env == nil {
		ic.env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	created := epoch
	platform := ocispec.Platform{Architecture: "amd64", OS: "linux"}
	config, err := jsonBlob(ocispec.MediaTypeImageConfig, ocispec.Image{
		Created:  &created,
		Platform: platform,
		Config: ocispec.ImageConfig{
			User:       ic.user,
			Env:        ic.env,
			Entrypoint: ic.entrypoint,
			Cmd:        ic.cmd,
			WorkingDir: ic.workdir,
		},
		RootFS:  ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
		History: history,
	})
	if err != nil {
		return nil, err
	}
	manifest, err := jsonBlob(ocispec.MediaTypeImageManifest, ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    config.desc,
		Layers:    layerDs,
	})
	if err != nil {
		return nil, err
	}
	mdesc := manifest.desc
	mdesc.Platform = &platform
	mdesc.Annotations = map[string]string{
		// containerd takes the full name from its own annotation; the OCI
		// ref name is the tag, as the image layout spec wants it.
		"io.containerd.image.name": name,
		ocispec.AnnotationRefName:  refTag(name),
	}
	return layoutArchive(mdesc, append(blobs, config, manifest))
}

// layerBlobs makes the compressed blob of each layer, with its descriptor,
// its diff id and its history entry.
func layerBlobs(layers []layer, level int) (blobs []blob, descs []ocispec.Descriptor, diffIDs []digest.Digest, history []ocispec.History, _ error) {
	created := epoch
	for _, l := range layers {
		raw, gz, err := tarLayer(l, level)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		b := newBlob(ocispec.MediaTypeImageLayerGzip, gz)
		blobs = append(blobs, b)
		descs = append(descs, b.desc)
		diffIDs = append(diffIDs, sha(raw))
		history = append(history, ocispec.History{Created: &created, CreatedBy: "tupper mkimage", Comment: l.comment})
	}
	return blobs, descs, diffIDs, history, nil
}

// layoutArchive is the OCI image layout, as a tar, of one manifest and
// the blobs (each written once).
func layoutArchive(manifest ocispec.Descriptor, blobs []blob) ([]byte, error) {
	index, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{manifest},
	})
	if err != nil {
		return nil, err
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return nil, err
	}
	members := []entry{
		file(ocispec.ImageLayoutFile, 0o644, 0, 0, string(layout)),
		file(ocispec.ImageIndexFile, 0o644, 0, 0, string(index)),
		dir("blobs", 0o755, 0, 0),
		dir("blobs/sha256", 0o755, 0, 0),
	}
	seen := map[digest.Digest]bool{}
	for _, b := range blobs {
		if seen[b.desc.Digest] {
			continue
		}
		seen[b.desc.Digest] = true
		members = append(members, file("blobs/sha256/"+b.desc.Digest.Encoded(), 0o644, 0, 0, string(b.data)))
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		h := m.hdr
		if err := tw.WriteHeader(&h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(m.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// refTag returns the tag of reference name ("latest" for "a/b:latest").
func refTag(name string) string {
	for i := len(name) - 1; i >= 0; i-- {
		switch name[i] {
		case ':':
			return name[i+1:]
		case '/':
			return "latest"
		}
	}
	return "latest"
}
