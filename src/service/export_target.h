// Inside service/: where ExportImage may write. A requested name is resolved inside the export directory, one
// component at a time, without following symbolic links; the directory that will hold the file is then held open,
// and the file is named through that descriptor (/proc/<pid>/fd/<n>/<name>), so a directory swapped for a link
// after the check changes nothing. The sink's last step never replaces a file (disk::create_sink).
#pragma once

#include <filesystem>
#include <string>

#include "common/fs.h"

namespace ferry::service {

class ExportTarget {
 public:
  // Throws OperationError (InvalidParameterException) naming the problem: an empty name, a NUL byte, a component
  // longer than NAME_MAX or a path longer than PATH_MAX, "..", a symbolic link on the way, an absolute path outside
  // `root`, an existing file, or a directory the server may not write. Missing directories are created.
  ExportTarget(const std::filesystem::path& root, const std::string& name);
  // Where to create the file: a path through the held directory descriptor.
  const std::filesystem::path& path() const { return path_; }
  // The path as the user sees it (root / name).
  const std::filesystem::path& shown() const { return shown_; }

 private:
  File dir_;
  std::filesystem::path path_, shown_;
};

}  // namespace ferry::service
